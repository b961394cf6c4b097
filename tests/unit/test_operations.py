"""Options per SageMaker operation (sagewire.config.operations): a route may only allow or
default what its mode's operation takes (start-up), and a call may only set what the operation
it makes takes (INVALID_ARGUMENT naming the field), so nothing is silently dropped.

The reported instance: a `stream` route with allow = ["target_model"] started without a word,
and InvokeStream with options.target_model answered OK without sending TargetModel.
"""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest

from sagewire.config import ConfigError, load_settings
from sagewire.config.operations import MODE_OPERATION, OPTIONS, PARAMETERS, Operation
from sagewire.config.settings import OptionName, RouteMode
from sagewire.core.errors import SagewireError
from sagewire.core.routes import RouteTable
from sagewire.core.types import InvocationOptions

# Options that are route settings or sagewire's own, not botocore parameters.
_NOT_BOTOCORE = {"framing"}


@pytest.mark.parametrize(
    "operation", [Operation.INVOKE_ENDPOINT, Operation.RESPONSE_STREAM, Operation.ASYNC]
)
def test_the_table_matches_botocores_service_model(operation: Operation) -> None:
    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    members = set(model.operation_model(operation.value).input_shape.members)
    for name in OptionName:
        if name.value in _NOT_BOTOCORE:
            continue
        assert (PARAMETERS[name.value] in members) is (name.value in OPTIONS[operation]), name


def test_every_option_and_mode_is_in_the_table() -> None:
    assert set(PARAMETERS) == {name.value for name in OptionName}
    assert set(MODE_OPERATION) == {mode.value for mode in RouteMode}


def _results(route: dict[str, Any]) -> dict[str, Any]:
    # Async routes name where their endpoint puts results (async.output_prefix).
    if route.get("mode") == "async":
        return {"async": {"output_prefix": "s3://results/out/"}}
    return {}


def _load(route: dict[str, Any]) -> None:
    load_settings(
        overrides={
            "async_jobs": {"job_id_keys": ["dGVzdC1vbmx5LWpvYi1pZC1rZXktMzItYnl0ZXMtbG9uZw=="]},
            "routes": {"r": {"endpoint": "e", **_results(route), **route}},
        }
    )


@pytest.mark.parametrize("mode", list(RouteMode))
@pytest.mark.parametrize("name", list(OptionName))
def test_a_route_may_allow_only_what_its_operation_takes(mode: RouteMode, name: OptionName) -> None:
    route = {"mode": mode.value, "allow": [name.value]}
    if name.value in OPTIONS[MODE_OPERATION[mode.value]]:
        _load(route)
        return
    with pytest.raises(ConfigError) as info:
        _load(route)
    [problem] = info.value.problems
    assert problem.startswith(f"routes.r.allow: Value error, {name.value!r}: mode {mode.value}")
    assert MODE_OPERATION[mode.value].value in problem


_DEFAULTS = {
    "custom_attributes": "a=1",
    "target_variant": "B",
    "target_model": "m.tar.gz",
    "inference_component": "ic",
    "target_container_hostname": "h",
    "enable_explanations": "`true`",
}


@pytest.mark.parametrize("mode", list(RouteMode))
@pytest.mark.parametrize("name", list(_DEFAULTS))
def test_a_route_may_default_only_what_its_operation_takes(mode: RouteMode, name: str) -> None:
    route = {"mode": mode.value, "defaults": {name: _DEFAULTS[name]}}
    if name in OPTIONS[MODE_OPERATION[mode.value]]:
        _load(route)
        return
    with pytest.raises(ConfigError) as info:
        _load(route)
    [problem] = info.value.problems
    assert problem.startswith(f"routes.r.defaults: Value error, {name}: mode {mode.value}")


def test_the_reported_stream_route_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        _load({"mode": "stream", "allow": ["target_model"]})
    assert "InvokeEndpointWithResponseStream" in str(info.value)


@pytest.mark.parametrize(
    ("options", "operation", "field"),
    [
        (InvocationOptions(target_model="m"), Operation.RESPONSE_STREAM, "options.target_model"),
        (
            InvocationOptions(enable_explanations="`true`"),
            Operation.RESPONSE_STREAM,
            "options.enable_explanations",
        ),
        (InvocationOptions(target_variant="B"), Operation.ASYNC, "options.target_variant"),
        (InvocationOptions(session_id="s"), Operation.BIDI, "options.session_id"),
    ],
)
def test_a_call_setting_what_its_operation_does_not_take_is_refused(
    options: InvocationOptions, operation: Operation, field: str
) -> None:
    # Pass-through routes allow every option of InvokeEndpoint: the operation decides.
    route = RouteTable({}, passthrough=True).resolve("endpoint/e")
    with pytest.raises(SagewireError) as info:
        route.check_allowed(options, operation)
    assert info.value.reason == "OPTION_NOT_SUPPORTED"
    assert [v.field for v in info.value.violations] == [field]
    assert operation.value in info.value.message
    route.check_allowed(
        options if operation is not Operation.BIDI else InvocationOptions(),
        Operation.INVOKE_ENDPOINT,
    )
