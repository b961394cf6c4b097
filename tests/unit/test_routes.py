"""Route table: resolving model names, option policy, pass-through and the concurrency bound."""

from __future__ import annotations

import pytest

from sagewire.config.operations import OPTIONS, Operation
from sagewire.config.settings import (
    OptionName,
    RouteDefaults,
    RouteMode,
    RouteSettings,
    StreamFraming,
)
from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.core.routes import RouteTable
from sagewire.core.types import InvocationOptions

INVOKE = Operation.INVOKE_ENDPOINT


def table(passthrough: bool = False, **routes: RouteSettings) -> RouteTable:
    return RouteTable(routes, passthrough=passthrough)


ECHO = RouteSettings(
    endpoint="echo-endpoint",
    allow=[OptionName.INFERENCE_ID, OptionName.CUSTOM_ATTRIBUTES],
    defaults=RouteDefaults(target_variant="A", custom_attributes="route"),
)


def test_resolves_a_configured_model() -> None:
    route = table(echo=ECHO).resolve("echo")
    assert route.name == "echo"
    assert route.settings.endpoint == "echo-endpoint"
    assert route.allowed == {"inference_id", "custom_attributes"}


def test_unknown_model_lists_known_models_sorted() -> None:
    with pytest.raises(SagewireError) as info:
        table(zeta=ECHO, alpha=ECHO).resolve("gamma")
    error = info.value
    assert error.kind is ErrorKind.NOT_FOUND
    assert error.reason == "UNKNOWN_MODEL"
    assert error.message == "unknown model 'gamma'; known models: alpha, zeta"
    assert error.metadata == {"model": "gamma"}


def test_unknown_model_with_no_routes_says_so() -> None:
    with pytest.raises(SagewireError, match=r"known models: none configured$"):
        table().resolve("x")


def test_unknown_model_lists_at_most_twenty() -> None:
    routes = {f"m{i:02d}": ECHO for i in range(25)}
    with pytest.raises(SagewireError) as info:
        RouteTable(routes).resolve("x")
    assert "m19" in info.value.message
    assert "m20" not in info.value.message


def test_empty_model_is_invalid_argument_naming_model() -> None:
    with pytest.raises(SagewireError) as info:
        table(echo=ECHO).resolve("")
    assert info.value.kind is ErrorKind.INVALID_ARGUMENT
    assert [v.field for v in info.value.violations] == ["model"]


def test_allowed_option_passes() -> None:
    table(echo=ECHO).resolve("echo").check_allowed(InvocationOptions(inference_id="x"), INVOKE)


def test_option_not_allowed_names_field_and_lists_allowed() -> None:
    route = table(echo=ECHO).resolve("echo")
    with pytest.raises(SagewireError) as info:
        route.check_allowed(InvocationOptions(inference_id="x", target_variant="B"), INVOKE)
    error = info.value
    assert error.kind is ErrorKind.INVALID_ARGUMENT
    assert error.reason == "OPTION_NOT_ALLOWED"
    assert error.violations[0].field == "options.target_variant"
    assert error.message == (
        "options.target_variant: is not allowed on model 'echo' "
        "(allowed: custom_attributes, inference_id)"
    )


def test_option_not_allowed_when_route_allows_none() -> None:
    route = table(bare=RouteSettings(endpoint="e")).resolve("bare")
    with pytest.raises(SagewireError, match=r"\(allowed: none\)$"):
        route.check_allowed(InvocationOptions(custom_attributes="x"), INVOKE)


def test_defaults_are_merged_under_caller_options() -> None:
    route = table(echo=ECHO).resolve("echo")
    merged = InvocationOptions(custom_attributes="caller").over(route.defaults)
    assert merged == InvocationOptions(custom_attributes="caller", target_variant="A")
    assert InvocationOptions().over(route.defaults) == route.defaults


def test_info_describes_the_route() -> None:
    info = table(echo=ECHO).resolve("echo").info()
    assert info.name == "echo"
    assert info.endpoint == "echo-endpoint"
    assert info.mode is RouteMode.REALTIME
    assert info.allowed_options == ("custom_attributes", "inference_id")
    # Every caller may read this: the default custom attributes' value is never shown.
    assert info.defaults == InvocationOptions(target_variant="A")
    assert info.default_custom_attributes == "<redacted>"
    assert info.timeout_s == 60.0


def test_infos_are_sorted_by_name() -> None:
    assert [i.name for i in table(b=ECHO, a=ECHO, c=ECHO).infos()] == ["a", "b", "c"]


def test_passthrough_disabled_treats_endpoint_prefix_as_unknown_model() -> None:
    with pytest.raises(SagewireError) as info:
        table(echo=ECHO).resolve("endpoint/my-endpoint")
    assert info.value.reason == "UNKNOWN_MODEL"


def test_passthrough_enabled_reaches_the_endpoint_as_a_raw_stream_route() -> None:
    routes = table(passthrough=True, echo=ECHO)
    route = routes.resolve("endpoint/my-endpoint")
    assert route.name == "endpoint/my-endpoint"
    assert route.settings.endpoint == "my-endpoint"
    assert route.mode is RouteMode.STREAM
    assert route.settings.framing is StreamFraming.RAW
    # Every option InvokeEndpoint takes; InvokeStream refuses the two it has no parameter for.
    assert route.allowed == OPTIONS[INVOKE]
    # Kept, so its concurrency bound holds across calls; not listed with configured routes.
    assert routes.resolve("endpoint/my-endpoint") is route
    assert [i.name for i in routes.infos()] == ["echo"]


@pytest.mark.parametrize("endpoint", ["", "bad_name", "-lead", "a" * 64, "x/y"])
def test_passthrough_rejects_invalid_endpoint_names(endpoint: str) -> None:
    with pytest.raises(SagewireError) as info:
        table(passthrough=True).resolve(f"endpoint/{endpoint}")
    error = info.value
    assert error.kind is ErrorKind.INVALID_ARGUMENT
    assert error.violations[0].field == "model"
    assert "is not a valid SageMaker endpoint name" in error.message
