"""ModelService shows what a caller needs to call a model and nothing that may be secret
(issue 10, class 12): a route's default custom attributes are redacted on ListModels and
GetModel, over gRPC and over the REST bridge, while calls still carry them."""

from __future__ import annotations

import aiohttp

from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import invoke_pb2, model_service_pb2
from support import start_sagewire

SECRET = "sk-live-7f3a9c1e"
ROUTES = {
    "vault": {
        "endpoint": "echo",
        "description": "echo with a credential in its default custom attributes",
        "defaults": {
            "custom_attributes": f"api_key={SECRET}; tenant=acme,Bearer {SECRET}x",
            "target_variant": "B",
        },
        "allow": ["custom_attributes"],
    },
    "plain": {"endpoint": "echo"},
}
REDACTED = "api_key=<redacted>;tenant=<redacted>;<redacted>"


async def test_list_and_get_models_redact_default_custom_attributes(
    emulator: RunningEmulator,
) -> None:
    async with start_sagewire(emulator, routes=ROUTES) as sw:
        listed = await sw.models.ListModels(model_service_pb2.ListModelsRequest())
        got = await sw.models.GetModel(model_service_pb2.GetModelRequest(name="vault"))
        for response in (listed, got):
            assert SECRET.encode() not in response.SerializeToString()
            assert b"acme" not in response.SerializeToString()
        vault = next(m for m in listed.models if m.name == "vault")
        assert vault == got.model
        assert vault.default_custom_attributes == REDACTED
        assert vault.defaults.custom_attributes == ""
        # What a caller needs to call the model is still there.
        assert vault.defaults.target_variant == "B"
        assert list(vault.allowed_options) == ["custom_attributes"]
        plain = next(m for m in listed.models if m.name == "plain")
        assert plain.default_custom_attributes == ""

        # The route still sends them: the echo model answers with the attributes it received.
        reply = await sw.inference.Invoke(invoke_pb2.InvokeRequest(model="vault", body=b"{}"))
        assert SECRET in reply.custom_attributes


async def test_the_rest_bridge_redacts_them_too(emulator: RunningEmulator) -> None:
    async with (
        start_sagewire(emulator, routes=ROUTES) as sw,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http,
    ):
        for path in ("/v1/models", "/v1/models/vault"):
            async with http.get(sw.rest_url + path) as response:
                text = await response.text()
                assert response.status == 200, text
                assert SECRET not in text
                assert "acme" not in text
                assert REDACTED in text
