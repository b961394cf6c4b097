"""SageMaker's per-option limits, checked before any network call."""

from __future__ import annotations

import pytest

from sagewire.core.errors import ErrorKind, FieldViolation, SagewireError
from sagewire.core.types import InvocationOptions
from sagewire.core.validation import (
    NEW_SESSION,
    validate_body_size,
    validate_media_type,
    validate_options,
)

# option → longest accepted length (from the sagemaker-runtime service model)
LIMITS = {
    "custom_attributes": 1024,
    "target_variant": 63,
    "target_model": 1024,
    "inference_component": 63,
    "target_container_hostname": 63,
    "inference_id": 64,
    "session_id": 256,
    "enable_explanations": 64,
}


def options(**values: str) -> InvocationOptions:
    return InvocationOptions(**values)


def rejected(**values: str) -> SagewireError:
    with pytest.raises(SagewireError) as info:
        validate_options(options(**values))
    return info.value


def test_every_option_has_a_limit_in_this_table() -> None:
    assert set(LIMITS) == set(InvocationOptions.__slots__)


def test_no_options_is_valid() -> None:
    validate_options(InvocationOptions())


@pytest.mark.parametrize(("name", "limit"), LIMITS.items())
def test_length_at_the_limit_is_accepted(name: str, limit: int) -> None:
    validate_options(options(**{name: "a" * limit}))


@pytest.mark.parametrize(("name", "limit"), LIMITS.items())
def test_length_past_the_limit_names_field_and_limit(name: str, limit: int) -> None:
    error = rejected(**{name: "a" * (limit + 1)})
    assert error.kind is ErrorKind.INVALID_ARGUMENT
    assert error.reason == "INVALID_ARGUMENT"
    assert error.message == (f"options.{name}: is {limit + 1} characters; the limit is {limit}")
    assert error.violations == (
        FieldViolation(f"options.{name}", f"is {limit + 1} characters; the limit is {limit}"),
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("target_variant", "AllTraffic"),
        ("target_variant", "variant-1"),
        ("target_variant", "a--b"),
        ("target_variant", "7"),
        ("inference_component", "ic-1"),
        ("inference_component", "a--b"),
        ("target_container_hostname", "container-2"),
        ("session_id", NEW_SESSION),
        ("session_id", "b9f1e0a4-1c2d"),
        ("custom_attributes", "trace_id=1; tier=gold"),
        ("custom_attributes", " leading space is fine here"),
        ("target_model", "model-a/model.tar.gz"),
        ("target_model", "inner spaces ok"),
        ("inference_id", "req 42"),
        ("enable_explanations", "`true`"),
        ("enable_explanations", " "),
    ],
)
def test_pattern_accepts(name: str, value: str) -> None:
    validate_options(options(**{name: value}))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("target_variant", "-a"),
        ("target_variant", "a-"),
        ("target_variant", "a_b"),
        ("target_variant", "a b"),
        ("target_variant", "variantë"),
        ("inference_component", "-ic"),
        ("inference_component", "ic-"),
        ("inference_component", "ic.1"),
        ("target_container_hostname", "host.local"),
        ("session_id", "new_session"),
        ("session_id", NEW_SESSION + "x"),
        ("session_id", "a b"),
        ("custom_attributes", "tab\there"),
        ("custom_attributes", "line\nbreak"),
        ("custom_attributes", "del\x7f"),
        ("custom_attributes", "naïve"),
        ("target_model", " leading-space"),
        ("target_model", "nul\x00"),
        ("target_model", "modèle"),
        ("inference_id", " id"),
        ("inference_id", "id\r"),
        ("enable_explanations", "é"),
    ],
)
def test_pattern_rejects_and_names_field(name: str, value: str) -> None:
    error = rejected(**{name: value})
    assert error.kind is ErrorKind.INVALID_ARGUMENT
    assert error.message.startswith(f"options.{name}: must be ")
    assert [v.field for v in error.violations] == [f"options.{name}"]


def test_session_id_rule_mentions_new_session() -> None:
    assert NEW_SESSION in rejected(session_id="-x").message


def test_first_bad_option_in_field_order_is_reported() -> None:
    error = rejected(target_variant="bad variant", inference_id=" bad")
    assert error.violations[0].field == "options.target_variant"


@pytest.mark.parametrize("field", ["content_type", "accept"])
def test_media_type_limit_and_pattern(field: str) -> None:
    validate_media_type(field, "application/json; charset=utf-8")
    validate_media_type(field, "a" * 1024)
    validate_media_type(field, "")
    with pytest.raises(SagewireError, match=rf"^{field}: is 1025 characters; the limit is 1024$"):
        validate_media_type(field, "a" * 1025)
    with pytest.raises(SagewireError, match=rf"^{field}: must be printable ASCII$"):
        validate_media_type(field, "text/plain\n")


def test_body_at_the_limit_is_accepted() -> None:
    validate_body_size(100, 100)
    validate_body_size(0, 100)


def test_body_past_the_limit_names_the_limit() -> None:
    with pytest.raises(SagewireError) as info:
        validate_body_size(6_291_457, 6_291_456)
    error = info.value
    assert error.kind is ErrorKind.INVALID_ARGUMENT
    assert error.reason == "PAYLOAD_TOO_LARGE"
    assert error.message == (
        "body: is 6291457 bytes; SageMaker accepts at most 6291456 bytes per request"
    )
    assert error.violations[0].field == "body"


def test_set_fields_lists_only_non_empty_options() -> None:
    assert options(target_variant="A", inference_id="x").set_fields() == [
        "target_variant",
        "inference_id",
    ]
    assert InvocationOptions().set_fields() == []


def test_over_falls_back_to_base_per_option() -> None:
    base = options(custom_attributes="route", target_variant="A")
    merged = options(custom_attributes="caller", inference_id="id-1").over(base)
    assert merged == options(custom_attributes="caller", target_variant="A", inference_id="id-1")
