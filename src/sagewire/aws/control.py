"""The SageMaker control plane, for one thing only: an endpoint's status (DescribeEndpoint),
shown by ModelService. Needs `sagemaker:DescribeEndpoint`; without it statuses read "Unknown"."""

from __future__ import annotations

import logging

from botocore.exceptions import ClientError

from sagewire.aws.client import SharedClient
from sagewire.aws.errors import AWS_FAILURES
from sagewire.config.settings import AwsSettings

log = logging.getLogger(__name__)

UNKNOWN = "Unknown"
NOT_FOUND = "NotFound"


class SageMakerControl(SharedClient):
    """The shared `sagemaker` (control plane) client. Use as an async context manager."""

    def __init__(self, settings: AwsSettings) -> None:
        super().__init__("sagemaker", settings.control_endpoint_url, settings)

    async def endpoint_status(self, endpoint: str) -> str:
        """ "InService", "Creating", ... as SageMaker reports it; "NotFound"; or "Unknown" when
        the control plane could not be asked (no permission, unreachable)."""
        try:
            response = await self._client.describe_endpoint(EndpointName=endpoint)
        except ClientError as exc:
            message = str(exc.response.get("Error", {}).get("Message", ""))
            if "could not find" in message.lower():
                return NOT_FOUND
            log.info("DescribeEndpoint %s failed: %s", endpoint, exc.response["Error"].get("Code"))
            return UNKNOWN
        except AWS_FAILURES as exc:
            log.info("DescribeEndpoint %s failed: %s", endpoint, type(exc).__name__)
            return UNKNOWN
        return str(response.get("EndpointStatus") or UNKNOWN)
