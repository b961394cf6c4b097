"""`GET /v1/openapi.json` over a real socket, and the document against the server: every
operation it lists is one the bridge routes (none answers "no such route / method")."""

from __future__ import annotations

from typing import Any

import aiohttp
from openapi_spec_validator import validate

from support import Sagewire

_EXAMPLES = {"{model}": "echo", "{name}": "echo", "{job_id}": "not-a-job"}


async def test_the_served_document_matches_the_routes(sagewire: Sagewire) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.get(sagewire.rest_url + "/v1/openapi.json") as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            document: dict[str, Any] = await response.json()
        validate(document)
        checked = 0
        for template, item in document["paths"].items():
            path = template
            for variable, value in _EXAMPLES.items():
                path = path.replace(variable, value)
            assert "{" not in path, template
            for method in item:
                headers = {"Grpc-Timeout": "5S"}
                async with http.request(
                    method.upper(), sagewire.rest_url + path, data=b"{}", headers=headers
                ) as response:
                    body = await response.read()
                    if response.status in (404, 405, 501):
                        reason = (await response.json())["details"][0]["reason"]
                        assert reason not in ("UNKNOWN_ROUTE", "METHOD_NOT_ALLOWED"), (
                            method,
                            template,
                            body,
                        )
                checked += 1
    assert checked >= 13
