"""Settings of a `bidi` route (`[routes.<name>.bidi]`): how it opens
InvokeEndpointWithBidirectionalStream. The target variant is the route's
`defaults.target_variant`, as for every other mode.

Kept in its own module so the HTTP/2 path evolves on its own.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

from sagewire.config.base import Strict

# Sent as HTTP headers, so visible ASCII only. SageMaker's own limits for these two are not
# published in the SDK's model; 1024 keeps any header proxy happy.
HeaderValue = Annotated[str, StringConstraints(max_length=1024, pattern=r"^[\x21-\x7e]*$")]


class BidiRouteSettings(Strict):
    """Options of InvokeEndpointWithBidirectionalStream on a route ("" = not sent)."""

    # X-Amzn-SageMaker-Model-Invocation-Path: the container path the stream reaches, when not
    # the default /invocations-bidirectional-stream.
    model_invocation_path: HeaderValue = ""
    # X-Amzn-SageMaker-Model-Query-String: query string passed on to the container.
    model_query_string: HeaderValue = ""
