"""Whether a job id names what this configuration serves, checked before any S3 call.

A verified job id proves that a holder of a job-id key made it, not that what it names is
allowed (docs/async.md): anyone holding a key could sign an id naming any S3 object sagewire
can read. So every id is also checked against the configuration: its model must be a route of
mode async, on the endpoint the id names, and its output and failure locations must lie under
that route's `async.output_prefix` and `async.failure_prefix` (the endpoint's S3OutputPath and
S3FailurePath). SageMaker's answer to InvokeEndpointAsync is checked the same way before an id
is issued, so every id sagewire hands out passes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sagewire.config.settings import RouteMode, RouteSettings
from sagewire.core.async_types import S3Location
from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.core.job_ids import JobToken, readable_location

log = logging.getLogger(__name__)


def _under(uri: str, prefix: str) -> bool:
    location = S3Location.parse(uri)
    return (
        bool(prefix) and readable_location(uri) and location is not None and location.under(prefix)
    )


def locations_allowed(settings: RouteSettings, output: str, failure: str) -> bool:
    """Output under the route's output prefix; failure empty or under its failure prefix."""
    own = settings.async_
    return _under(output, own.output_prefix) and (
        not failure or _under(failure, own.failure_prefix)
    )


def not_served() -> SagewireError:
    # One message for every mismatch: which part differs is no business of the caller's.
    return SagewireError(
        message="job_id names a job this sagewire does not serve: its model is not an async "
        "model here, or the model's endpoint or result locations changed since the job was "
        "submitted",
        kind=ErrorKind.FAILED_PRECONDITION,
        reason="JOB_NOT_SERVED",
    )


def check_token(token: JobToken, routes: Mapping[str, RouteSettings]) -> None:
    """FAILED_PRECONDITION (JOB_NOT_SERVED) unless `token` names a configured async route, its
    endpoint and locations under its result prefixes."""
    settings = routes.get(token.model)
    if (
        settings is None
        or settings.mode is not RouteMode.ASYNC
        or settings.endpoint != token.endpoint
        or not locations_allowed(settings, token.output_location, token.failure_location)
    ):
        raise not_served()


def check_accepted(model: str, settings: RouteSettings, output: str, failure: str) -> None:
    """Refuse to issue an id for locations SageMaker chose outside the route's prefixes: the
    id could never be read. INTERNAL: the configuration disagrees with the endpoint's."""
    if locations_allowed(settings, output, failure):
        return
    log.error(
        "SageMaker put the results of an async job on model %r at %s (failure: %s), outside "
        "routes.%s.async.output_prefix / failure_prefix; set them to the endpoint's "
        "S3OutputPath / S3FailurePath",
        model,
        output,
        failure or "none",
        model,
    )
    raise SagewireError(
        message=f"SageMaker accepted the job on model {model!r} but puts its results outside "
        "the locations configured for the model (async.output_prefix, async.failure_prefix); "
        "the job id could not be read, so none is issued. The operator must fix the route",
        kind=ErrorKind.INTERNAL,
        reason="RESULT_LOCATION_NOT_CONFIGURED",
        metadata={"model": model},
    )
