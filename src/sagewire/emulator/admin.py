"""Changing faults on a running emulator over HTTP, so a `make run` user can see sagewire's
answer to each failure without restarting anything (docs/emulator.md, "Faults").

    GET    /_emulator/faults              every endpoint's current fault ({} = healthy)
    PUT    /_emulator/faults/{endpoint}   body: a Fault as JSON ({"error": "throttling"}); {} heals
    DELETE /_emulator/faults/{endpoint}   healthy again
    POST   /_emulator/reset               configured faults back, counters zero

A new fault applies to calls that start afterwards, on the HTTP/1.1 and the HTTP/2 listener
alike (they share the endpoints). Unknown endpoints answer 404 and invalid faults 400, each with
{"error": "..."}; like the rest of the emulator, this listens on loopback only by default.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from sagewire.emulator.endpoints import EmulatorState
from sagewire.emulator.faults import Fault


def _shown(fault: Fault) -> dict[str, object]:
    return fault.model_dump(exclude_defaults=True, mode="json")


def install(app: web.Application, state: EmulatorState) -> None:
    async def list_faults(request: web.Request) -> web.Response:
        return web.json_response(
            {name: _shown(ep.fault) for name, ep in sorted(state.endpoints.items())}
        )

    def _unknown(name: str) -> web.Response | None:
        # A response, not HTTPNotFound: the emulator renders that as an unknown operation.
        if name in state.endpoints:
            return None
        known = ", ".join(sorted(state.endpoints))
        error = f"no emulated endpoint {name!r}; endpoints: {known}"
        return web.json_response({"error": error}, status=404)

    async def put_fault(request: web.Request) -> web.Response:
        name = request.match_info["endpoint"]
        if unknown := _unknown(name):
            return unknown
        try:
            fault = Fault.model_validate_json(await request.read() or b"{}")
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            return web.json_response({"error": problems}, status=400)
        state.set_fault(name, fault)
        return web.json_response(_shown(fault))

    async def delete_fault(request: web.Request) -> web.Response:
        name = request.match_info["endpoint"]
        if unknown := _unknown(name):
            return unknown
        state.set_fault(name, None)
        return web.json_response({})

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.json_response({})

    app.router.add_get("/_emulator/faults", list_faults)
    app.router.add_put("/_emulator/faults/{endpoint}", put_fault)
    app.router.add_delete("/_emulator/faults/{endpoint}", delete_fault)
    app.router.add_post("/_emulator/reset", reset)
