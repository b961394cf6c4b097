"""deploy/iam/sagewire-policy.json: it parses, it grants every action the AWS adapters call, and
nothing else.

The actions are derived from the code, not listed by hand: every `<...>._client.<method>(...)`
call in src/sagewire/aws/ is found with `ast`, the method is mapped to its API operation through
botocore's own service models (or the HTTP/2 SDK's client for the bidirectional stream), and the
operation to its IAM action. A new AWS call in an adapter fails this test until the policy (and
the table below, for S3) says what it needs.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from k8s_render import TEST_SECRETS, environment

from sagewire.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "deploy" / "iam" / "sagewire-policy.json"
ADAPTERS = REPO / "src" / "sagewire" / "aws"

# The botocore services sagewire's aioboto3 clients are made for (aws/runtime.py, control.py,
# s3.py): SageMaker Runtime and the control plane share the IAM prefix `sagemaker`.
IAM_PREFIX = {"sagemaker-runtime": "sagemaker", "sagemaker": "sagemaker", "s3": "s3"}

# S3 operations whose IAM action is not named like the operation. Source: the Service
# Authorization Reference, "Actions defined by Amazon S3" (the multipart parts of an upload are
# authorised as s3:PutObject, HeadObject as s3:GetObject).
S3_ACTIONS = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
}

# Granted without a matching call, on purpose: without s3:ListBucket, S3 answers HeadObject and
# GetObject of a missing key with 403 instead of 404, and a job whose output is not written yet
# would read as "access denied" instead of "still running" (docs/async.md, "AWS permissions").
GRANTED_WITHOUT_A_CALL = {"s3:ListBucket"}


def _client_calls() -> dict[str, set[str]]:
    """Method name → the adapter files calling it on an AWS client (`*._client.<method>(...)`)."""
    calls: dict[str, set[str]] = {}
    for path in sorted(ADAPTERS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            if isinstance(owner, ast.Attribute) and owner.attr == "_client":
                calls.setdefault(node.func.attr, set()).add(path.name)
    return calls


def _operations() -> dict[str, str]:
    """The adapters' client calls as IAM actions: method name → action."""
    session = botocore.session.get_session()
    by_method: dict[str, tuple[str, str]] = {}
    for service in IAM_PREFIX:
        client = session.create_client(
            service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        for method, operation in client.meta.method_to_api_mapping.items():
            by_method.setdefault(method, (service, operation))
    actions: dict[str, str] = {}
    for method in _client_calls():
        if method == "close":  # closing a client is not an AWS call
            continue
        if method in by_method:
            service, operation = by_method[method]
            if service == "s3":
                assert operation in S3_ACTIONS, (
                    f"S3 {operation} is called in src/sagewire/aws/: add its IAM action to "
                    "S3_ACTIONS here and grant it in deploy/iam/sagewire-policy.json"
                )
                actions[method] = S3_ACTIONS[operation]
            else:
                actions[method] = f"{IAM_PREFIX[service]}:{operation}"
            continue
        actions[method] = _http2_sdk_action(method)
    return actions


def _http2_sdk_action(method: str) -> str:
    """A call on the HTTP/2 SDK's client (aws/bidi.py), which botocore does not model."""
    from aws_sdk_sagemaker_runtime_http2.client import (  # type: ignore[import-untyped]
        AsyncSageMakerRuntimeHTTP2Client,
    )

    assert hasattr(AsyncSageMakerRuntimeHTTP2Client, method), (
        f"{method} is called on an AWS client but no botocore service or the HTTP/2 SDK has it"
    )
    operation = "".join(part.capitalize() for part in method.split("_"))
    return f"sagemaker:{operation}"


def _example_settings() -> Settings:
    """The Kubernetes example configuration, with the job-id key the pod gets from a Secret."""
    keys = TEST_SECRETS[("sagewire-job-id-keys", "job_id_keys")]
    with environment({"SAGEWIRE_ASYNC_JOBS__JOB_ID_KEYS": keys}):
        return load_settings(REPO / "deploy" / "k8s" / "base" / "sagewire.toml")


def _policy() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(POLICY.read_text(encoding="utf-8"))
    return document


def _granted(policy: dict[str, Any]) -> set[str]:
    granted: set[str] = set()
    for statement in policy["Statement"]:
        actions = statement["Action"]
        granted |= {actions} if isinstance(actions, str) else set(actions)
    return granted


def test_the_scan_finds_the_adapters_calls() -> None:
    calls = _client_calls()
    print("AWS client calls:", {method: sorted(names) for method, names in sorted(calls.items())})
    # Every client sagewire makes is seen being called (so the scan cannot pass by finding
    # nothing): SageMaker Runtime, the control plane, S3 and the HTTP/2 SDK.
    session = botocore.session.get_session()
    for service in IAM_PREFIX:
        methods = set(
            session.create_client(
                service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
            ).meta.method_to_api_mapping
        )
        assert methods & set(calls), f"no {service} call found in src/sagewire/aws/"
    assert "invoke_endpoint_with_bidirectional_stream" in calls


def test_policy_grants_every_action_the_code_calls_and_nothing_more() -> None:
    needed = set(_operations().values())
    granted = _granted(_policy())
    print("actions the code needs:", sorted(needed))
    assert needed - granted == set(), "called by src/sagewire/aws/ but not granted"
    assert granted - needed == GRANTED_WITHOUT_A_CALL, "granted but never called"


def test_policy_is_well_formed_and_scoped() -> None:
    policy = _policy()
    assert policy["Version"] == "2012-10-17"
    sids = [statement["Sid"] for statement in policy["Statement"]]
    assert len(sids) == len(set(sids))
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        for action in statement["Action"]:
            assert "*" not in action, f"{statement['Sid']}: wildcard action {action}"
        for resource in statement["Resource"]:
            assert resource.startswith("arn:aws:"), resource
            assert resource.split(":", 5)[5] not in ("*", ""), f"{statement['Sid']}: {resource}"
            # Object actions only on prefixes, never a whole bucket's objects.
            if resource.startswith("arn:aws:s3:::") and "/" in resource:
                bucket_and_key = resource.removeprefix("arn:aws:s3:::")
                assert bucket_and_key.count("/") >= 2, f"{statement['Sid']}: {resource}"


@pytest.mark.parametrize("sid", ["InvokeRoutedEndpoints", "DescribeRoutedEndpoints"])
def test_endpoint_statements_name_exactly_the_routed_endpoints(sid: str) -> None:
    """The example policy and the Kubernetes example configuration describe one deployment."""
    settings = _example_settings()
    # SageMaker lower-cases endpoint names in ARNs.
    expected = {
        f"arn:aws:sagemaker:{settings.aws.region}:111122223333:endpoint/{route.endpoint.lower()}"
        for route in settings.routes.values()
    }
    statement = next(s for s in _policy()["Statement"] if s["Sid"] == sid)
    assert set(statement["Resource"]) == expected


def test_staging_statement_matches_the_configured_prefix() -> None:
    settings = _example_settings()
    jobs = settings.async_jobs
    statement = next(s for s in _policy()["Statement"] if s["Sid"] == "StageAsyncInputs")
    assert statement["Resource"] == [f"arn:aws:s3:::{jobs.staging_bucket}/{jobs.staging_prefix}*"]
