"""The hostile-input table: credentials an attacker (or a broken client) sends, each with the
status and reason it must be refused with. Run over gRPC (tests/integration/test_auth_hostile.py)
and over the REST bridge (test_auth_rest.py)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import jwt
from auth_support import BATCH_KEY, api_key, bearer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from security_support import AUDIENCE, ISSUER, Issuer

UNAUTH = grpc.StatusCode.UNAUTHENTICATED
Metadata = list[tuple[str, str]]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "svc-fraud",
        "iat": now,
        "exp": now + 300,
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def _unsigned(header: dict[str, object], claims: dict[str, object], signature: str = "") -> str:
    parts = [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode())]
    return ".".join([*parts, signature])


def _tamper_signature(token: str) -> str:
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[10] ^= 0x01
    return f"{head}.{body}.{_b64(bytes(raw))}"


def _swap_payload(token: str, claims: dict[str, object]) -> str:
    head, _, sig = token.split(".")
    return f"{head}.{_b64(json.dumps(claims).encode())}.{sig}"


def _public_pem(issuer: Issuer) -> bytes:
    key = issuer.keys["k1"].public_key()
    return key.public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _hmac_with(secret: bytes, kid: str = "k1") -> str:
    """HS256 with a public value as the secret: the key-confusion attack. PyJWT refuses to
    sign with PEM-looking secrets, so the JWS is assembled by hand."""
    import hashlib
    import hmac

    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(_claims()).encode())
    tag = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(tag)}"


ATTACKER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ATTACKER_EC = ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class Case:
    name: str
    metadata: Callable[[Issuer], Metadata]
    code: grpc.StatusCode
    reason: str | None  # None: refused by gRPC itself before sagewire (no ErrorInfo)


def _signed(issuer: Issuer, **changes: object) -> str:
    return jwt.encode(_claims(**changes), issuer.keys["k1"], "RS256", headers={"kid": "k1"})


CASES = [
    Case("no credentials", lambda i: [], UNAUTH, "CREDENTIALS_MISSING"),
    Case("empty bearer", lambda i: [("authorization", "Bearer ")], UNAUTH, "CREDENTIALS_MALFORMED"),
    Case(
        "basic auth",
        lambda i: [("authorization", "Basic dXNlcjpwYXNz")],
        UNAUTH,
        "CREDENTIALS_MALFORMED",
    ),
    Case(
        "token without scheme",
        lambda i: [("authorization", i.token())],
        UNAUTH,
        "CREDENTIALS_MALFORMED",
    ),
    Case("two-part token", lambda i: bearer("abc.def"), UNAUTH, "TOKEN_MALFORMED"),
    Case("not base64", lambda i: bearer("@@@.###.$$$"), UNAUTH, "TOKEN_MALFORMED"),
    Case(
        "forged signature",
        lambda i: bearer(_tamper_signature(i.token("svc-fraud"))),
        UNAUTH,
        "TOKEN_INVALID",
    ),
    Case(
        "altered claims, signature kept",
        lambda i: bearer(_swap_payload(i.token("svc-nobody"), _claims(sub="svc-fraud"))),
        UNAUTH,
        "TOKEN_INVALID",
    ),
    Case(
        "attacker key under the issuer's kid",
        lambda i: bearer(jwt.encode(_claims(), ATTACKER_RSA, "RS256", headers={"kid": "k1"})),
        UNAUTH,
        "TOKEN_INVALID",
    ),
    Case(
        "attacker key, unknown kid",
        lambda i: bearer(jwt.encode(_claims(), ATTACKER_RSA, "RS256", headers={"kid": "evil"})),
        UNAUTH,
        "TOKEN_KEY_UNKNOWN",
    ),
    Case(
        "jku pointing at the attacker's JWKS",
        lambda i: bearer(
            jwt.encode(
                _claims(),
                ATTACKER_RSA,
                "RS256",
                headers={"kid": "evil", "jku": "http://127.0.0.1:9/j"},
            )
        ),
        UNAUTH,
        "TOKEN_KEY_UNKNOWN",
    ),
    Case(
        "expired",
        lambda i: bearer(_signed(i, exp=int(time.time()) - 3600)),
        UNAUTH,
        "TOKEN_EXPIRED",
    ),
    Case(
        "expired just past the leeway",
        lambda i: bearer(_signed(i, exp=int(time.time()) - 90)),
        UNAUTH,
        "TOKEN_EXPIRED",
    ),
    Case(
        "not yet valid",
        lambda i: bearer(_signed(i, nbf=int(time.time()) + 3600)),
        UNAUTH,
        "TOKEN_NOT_YET_VALID",
    ),
    Case(
        "wrong issuer",
        lambda i: bearer(_signed(i, iss="https://evil.test")),
        UNAUTH,
        "TOKEN_INVALID",
    ),
    Case(
        "wrong audience",
        lambda i: bearer(_signed(i, aud="another-service")),
        UNAUTH,
        "TOKEN_INVALID",
    ),
    Case(
        "audience list without us",
        lambda i: bearer(_signed(i, aud=["a", "b"])),
        UNAUTH,
        "TOKEN_INVALID",
    ),
    Case("no exp", lambda i: bearer(_signed(i, exp=None)), UNAUTH, "TOKEN_INVALID"),
    Case("no sub", lambda i: bearer(_signed(i, sub=None)), UNAUTH, "TOKEN_INVALID"),
    Case("no aud", lambda i: bearer(_signed(i, aud=None)), UNAUTH, "TOKEN_INVALID"),
    Case("exp not a number", lambda i: bearer(_signed(i, exp="tomorrow")), UNAUTH, "TOKEN_INVALID"),
    Case("sub not a string", lambda i: bearer(_signed(i, sub=12345)), UNAUTH, "TOKEN_INVALID"),
    Case(
        "sub with spaces",
        lambda i: bearer(_signed(i, sub="svc-fraud extra")),
        UNAUTH,
        "TOKEN_INVALID",
    ),
    Case(
        "alg none",
        lambda i: bearer(_unsigned({"alg": "none", "kid": "k1"}, _claims())),
        UNAUTH,
        "TOKEN_INVALID",
    ),
    Case(
        "alg None",
        lambda i: bearer(_unsigned({"alg": "None", "kid": "k1"}, _claims())),
        UNAUTH,
        "TOKEN_INVALID",
    ),
    Case(
        "alg missing",
        lambda i: bearer(_unsigned({"kid": "k1"}, _claims(), "c2ln")),
        UNAUTH,
        "TOKEN_INVALID",
    ),
    Case(
        "HS256 keyed with the public PEM",
        lambda i: bearer(_hmac_with(_public_pem(i))),
        UNAUTH,
        "TOKEN_INVALID",
    ),
    Case(
        "HS256 keyed with the public JWK",
        lambda i: bearer(_hmac_with(json.dumps(i.jwks()["keys"][0]).encode())),
        UNAUTH,
        "TOKEN_INVALID",
    ),
    Case(
        "ES256 header on the issuer's RSA kid",
        lambda i: bearer(jwt.encode(_claims(), ATTACKER_EC, "ES256", headers={"kid": "k1"})),
        UNAUTH,
        "TOKEN_INVALID",
    ),
    Case(
        "PS256 (not allowed) with the issuer's key",
        lambda i: bearer(jwt.encode(_claims(), i.keys["k1"], "PS256", headers={"kid": "k1"})),
        UNAUTH,
        "TOKEN_INVALID",
    ),
    Case(
        "kid not a string",
        lambda i: bearer(_unsigned({"alg": "RS256", "kid": 7}, _claims(), "c2ln")),
        UNAUTH,
        "TOKEN_MALFORMED",
    ),
    # Past auth.jwt.max_token_bytes (4096 on this server) but within gRPC's metadata limit.
    Case(
        "oversized token", lambda i: bearer(_signed(i, pad="x" * 5000)), UNAUTH, "TOKEN_TOO_LARGE"
    ),
    Case(
        "two authorization headers",
        lambda i: bearer(i.token("svc-fraud")) + bearer(i.token("svc-other")),
        UNAUTH,
        "CREDENTIALS_AMBIGUOUS",
    ),
    Case(
        "token and API key",
        lambda i: bearer(i.token("svc-fraud")) + api_key(BATCH_KEY),
        UNAUTH,
        "CREDENTIALS_AMBIGUOUS",
    ),
    Case(
        "two API keys",
        lambda i: api_key(BATCH_KEY) + api_key(BATCH_KEY),
        UNAUTH,
        "CREDENTIALS_AMBIGUOUS",
    ),
    Case("unknown API key", lambda i: api_key("swk_" + "A" * 43), UNAUTH, "API_KEY_INVALID"),
    Case("short API key", lambda i: api_key("x"), UNAUTH, "API_KEY_INVALID"),
    Case(
        "API key hash sent as the key",
        lambda i: api_key(
            __import__("sagewire.security.api_keys", fromlist=["hash_key"]).hash_key(BATCH_KEY)
        ),
        UNAUTH,
        "API_KEY_INVALID",
    ),
    Case(
        "valid token, caller not listed",
        lambda i: bearer(i.token("svc-intruder")),
        grpc.StatusCode.PERMISSION_DENIED,
        "MODEL_NOT_PERMITTED",
    ),
    # gRPC refuses metadata past its limit (8 KiB by default) before any handler runs.
    Case(
        "huge authorization header",
        lambda i: bearer("x" * 20_000),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        None,
    ),
]
