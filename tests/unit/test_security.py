"""Pure security logic: configuration rules, certificate principals, caller lists, quotas,
JWKS lifetimes and API-key files."""

from __future__ import annotations

import pytest

from sagewire.config import ConfigError, load_settings
from sagewire.config.security import JwtSettings, QuotaLimits
from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.security.api_keys import ApiKeyFileError, hash_key, new_key, parse_hashes
from sagewire.security.authn import principal_of_certificate
from sagewire.security.jwks import cache_lifetime
from sagewire.security.policy import Policy
from sagewire.security.principal import PeerIdentity, Principal
from sagewire.security.quotas import Quotas

JWT = {"jwks_url": "https://issuer.test/jwks", "issuer": "https://issuer.test", "audience": "a"}


def _problems(**overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides=overrides)
    return "\n".join(caught.value.problems)


def test_callers_need_authentication() -> None:
    routes = {"echo": {"endpoint": "echo", "callers": ["jwt:sub:a"]}}
    assert "no authentication is configured" in _problems(routes=routes)
    assert load_settings(overrides={"routes": routes, "auth": {"jwt": JWT}}).auth.enabled


@pytest.mark.parametrize(
    "caller", ["svc-a", "jwt:svc", "spiffe://", "group:", "key:", "dns:a b", "**", "jwt:sub:"]
)
def test_malformed_callers_are_named(caller: str) -> None:
    routes = {"echo": {"endpoint": "echo", "callers": [caller]}}
    assert "is not a caller; use one of" in _problems(routes=routes, auth={"jwt": JWT})


def test_mtls_needs_a_client_ca() -> None:
    tls = {"cert_file": "s.pem", "key_file": "k.pem"}
    assert "auth.mtls needs server.tls with client_ca_file" in _problems(
        auth={"mtls": True}, server={"tls": tls}
    )


@pytest.mark.parametrize("alg", ["HS256", "none", "RS1"])
def test_only_asymmetric_algorithms_are_allowed(alg: str) -> None:
    assert "auth.jwt.algorithms.0" in _problems(auth={"jwt": {**JWT, "algorithms": [alg]}})


def test_api_keys_need_a_source_outside_the_toml() -> None:
    assert "set file or env" in _problems(auth={"api_keys": {}})


@pytest.mark.parametrize(
    ("peer", "principal"),
    [
        (PeerIdentity(uris=("spiffe://td/a",), dns_names=("x",)), "spiffe://td/a"),
        (PeerIdentity(uris=("https://x/y", "spiffe://td/a")), "spiffe://td/a"),
        (PeerIdentity(uris=("https://x/y",), dns_names=("b.internal", "c")), "dns:b.internal"),
        (PeerIdentity(uris=("spiffe://td/a", "spiffe://td/b"), dns_names=("x",)), None),
        (PeerIdentity(), None),
    ],
)
def test_principal_of_certificate(peer: PeerIdentity, principal: str | None) -> None:
    assert principal_of_certificate(peer) == principal


def test_policy_is_default_deny_and_admits_by_id_group_or_star() -> None:
    policy = Policy({"a": ["jwt:sub:x", "group:g"], "b": ["*"], "c": []})
    x, g, other = Principal("jwt:sub:x"), Principal("key:k", frozenset({"g"})), Principal("key:o")
    assert [policy.may_call(p, "a") for p in (x, g, other)] == [True, True, False]
    assert all(policy.may_call(p, "b") for p in (x, g, other))
    assert not any(policy.may_call(p, "c") for p in (x, g, other))
    assert not policy.may_call(x, "endpoint/anything")  # pass-through: nobody by default
    assert not policy.may_reflect(x)


def _exhausted(call: object) -> SagewireError:
    with pytest.raises(SagewireError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.kind is ErrorKind.RESOURCE_EXHAUSTED
    return caught.value


def test_rate_quota_refills_over_time() -> None:
    now = [0.0]
    quotas = Quotas(100, clock=lambda: now[0])
    limits = QuotaLimits(rps=2, burst=2)
    assert quotas.admit("p", limits, "q") is None
    quotas.admit("p", limits, "q")
    error = _exhausted(lambda: quotas.admit("p", limits, "q"))
    assert error.reason == "QUOTA_EXCEEDED"
    assert error.retry_after_s == pytest.approx(0.5)
    assert error.quota_violations[0].subject == "p"
    quotas.admit("other", limits, "q")  # another key has its own bucket
    now[0] = 0.5
    quotas.admit("p", limits, "q")


def test_concurrency_quota_is_given_back() -> None:
    quotas = Quotas(100)
    limits = QuotaLimits(max_concurrency=1)
    release = quotas.admit("p", limits, "q")
    assert release is not None
    _exhausted(lambda: quotas.admit("p", limits, "q"))
    release()
    assert quotas.admit("p", limits, "q") is not None


def test_idle_keys_are_forgotten_past_the_bound() -> None:
    quotas = Quotas(100)
    held = quotas.admit("busy", QuotaLimits(max_concurrency=1), "q")
    for n in range(300):
        quotas.admit(f"k{n}", QuotaLimits(rps=1), "q")
    assert len(quotas._usage) <= 101
    assert "busy" in quotas._usage  # a key with calls in flight is kept
    assert held is not None


@pytest.mark.parametrize(
    ("header", "ttl"),
    [
        (None, 300.0),
        ("public, max-age=600", 600.0),
        ('max-age="120"', 120.0),
        ("max-age=5", 60.0),  # clamped to jwks_min_ttl_s
        ("max-age=99999999", 86_400.0),
        ("no-store", 60.0),
    ],
)
def test_jwks_cache_lifetime(header: str | None, ttl: float) -> None:
    assert cache_lifetime(header, JwtSettings(**JWT)) == ttl  # type: ignore[arg-type]


def test_api_key_files() -> None:
    key, line = new_key("batch")
    assert key.startswith("swk_")
    assert parse_hashes(f"# comment\n\n{line}\n", "f") == {hash_key(key)[7:]: "batch"}
    with pytest.raises(ApiKeyFileError, match="f line 1"):
        parse_hashes(f"batch {key}", "f")  # a key where its hash belongs
