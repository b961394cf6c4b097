"""docs/security.md's IAM policy names every AWS action sagewire calls, and nothing else: the
client methods called in src/sagewire/aws/ are mapped to their IAM actions and compared with
the policy's (and the table's) actions."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "security.md").read_text()

# boto3 / SDK method → the IAM action that authorises it.
IAM_ACTION = {
    "invoke_endpoint": "sagemaker:InvokeEndpoint",
    "invoke_endpoint_with_response_stream": "sagemaker:InvokeEndpointWithResponseStream",
    "invoke_endpoint_async": "sagemaker:InvokeEndpointAsync",
    "invoke_endpoint_with_bidirectional_stream": "sagemaker:InvokeEndpointWithBidirectionalStream",
    "describe_endpoint": "sagemaker:DescribeEndpoint",
    "put_object": "s3:PutObject",
    "create_multipart_upload": "s3:PutObject",
    "upload_part": "s3:PutObject",
    "complete_multipart_upload": "s3:PutObject",
    "abort_multipart_upload": "s3:AbortMultipartUpload",
    "get_object": "s3:GetObject",
    "head_object": "s3:GetObject",
}
# Not called, but needed so HEAD of a missing key is 404 rather than 403.
IMPLIED = {"s3:ListBucket"}
_CALL = re.compile(r"\._?client\.([a-z_]+)\(")


def _called() -> set[str]:
    methods: set[str] = set()
    for source in (REPO / "src" / "sagewire" / "aws").glob("*.py"):
        methods |= set(_CALL.findall(source.read_text()))
    return methods


def test_every_aws_call_is_known() -> None:
    unknown = _called() - set(IAM_ACTION)
    assert not unknown, f"add these to IAM_ACTION and docs/security.md: {unknown}"


def test_policy_lists_exactly_the_actions_called() -> None:
    needed = {IAM_ACTION[m] for m in _called()} | IMPLIED
    section = DOC.split("## Least-privilege IAM policy", 1)[1]
    policy = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    granted: set[str] = set()
    for statement in policy["Statement"]:
        actions = statement["Action"]
        granted |= {actions} if isinstance(actions, str) else set(actions)
    assert granted == needed
    table = set(re.findall(r"^\| `([a-z0-9]+:[A-Za-z]+)` \|", section, re.MULTILINE))
    assert table == needed
