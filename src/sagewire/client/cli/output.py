"""What the CLI prints: human text on a terminal, one JSON document per result with
`--output json`, errors on stderr, progress bars on stderr only when it is a terminal."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from tqdm import tqdm

from sagewire.client.errors import SagewireError
from sagewire.client.results import InvokeResult, Job, JobEvent, JobResult, ModelInfo, StreamPart


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _body_fields(body: bytes, content_type: str) -> dict[str, Any]:
    """`json` when the body is JSON (exact numbers), else `text` or `body_base64`."""
    if _is_json(content_type):
        try:
            return {"json": json.loads(body)}
        except ValueError:
            pass
    try:
        return {"text": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_base64": base64.b64encode(body).decode()}


@dataclass
class Printer:
    """Writes results to `out` (stdout) and errors to `err` (stderr)."""

    as_json: bool
    out: IO[str] = sys.stdout
    err: IO[str] = sys.stderr

    def _doc(self, doc: Any) -> None:
        self.out.write(json.dumps(doc, ensure_ascii=False) + "\n")
        self.out.flush()

    def _body(self, body: bytes, content_type: str) -> None:
        fields = _body_fields(body, content_type)
        if "json" in fields:
            self.out.write(json.dumps(fields["json"], indent=2, ensure_ascii=False) + "\n")
        elif "text" in fields:
            self.out.write(
                fields["text"] if fields["text"].endswith("\n") else fields["text"] + "\n"
            )
        else:  # binary: the bytes as they are (redirect stdout to a file)
            self.out.flush()
            buffer = getattr(self.out, "buffer", None)
            if buffer is not None:
                buffer.write(body)
        self.out.flush()

    def invoke(self, result: InvokeResult) -> None:
        if self.as_json:
            self._doc(
                {
                    "content_type": result.content_type,
                    "variant": result.variant,
                    **_body_fields(result.body, result.content_type),
                }
            )
        else:
            self._body(result.body, result.content_type)

    def part(self, part: StreamPart) -> None:
        if self.as_json:
            self._doc({"index": part.index, **_body_fields(part.body, "application/json")})
            return
        self.out.write(part.text)
        self.out.flush()

    def job(self, job: Job) -> None:
        if self.as_json:
            self._doc(
                {
                    "job_id": job.job_id,
                    "inference_id": job.inference_id,
                    "model": job.model,
                    "expires_at": job.expires_at.isoformat() if job.expires_at else None,
                    "input_size": job.input_size,
                }
            )
        else:
            self.out.write(job.job_id + "\n")

    def job_event(self, event: JobEvent) -> None:
        when = event.observed_at.isoformat() if event.observed_at else None
        if self.as_json:
            self._doc(
                {
                    "state": event.state.value,
                    "observed_at": when,
                    "failure_reason": event.failure_reason,
                }
            )
        else:
            reason = f": {event.failure_reason}" if event.failure_reason else ""
            self.out.write(f"{when or '-'} {event.state.value}{reason}\n")
        self.out.flush()

    def job_result(self, result: JobResult) -> None:
        if self.as_json:
            doc: dict[str, Any] = {
                "state": result.state.value,
                "output_size": result.output_size,
                "failure_reason": result.failure_reason,
            }
            if result.output_inlined and result.body:
                doc |= _body_fields(result.body, result.content_type)
            self._doc(doc)
            return
        self.err.write(f"state: {result.state.value}\n")
        if result.failure_reason:
            self.err.write(f"failure: {result.failure_reason}\n")
        if result.body:
            self._body(result.body, result.content_type)
        elif result.output_size:
            self.err.write(f"output: {result.output_size} bytes (read it with `jobs read`)\n")

    def models(self, models: list[ModelInfo]) -> None:
        if self.as_json:
            self._doc(
                [
                    {
                        "name": m.name,
                        "mode": m.mode,
                        "endpoint_name": m.endpoint_name,
                        "endpoint_status": m.endpoint_status,
                        "description": m.description,
                        "allowed_options": list(m.allowed_options),
                    }
                    for m in models
                ]
            )
            return
        width = max((len(m.name) for m in models), default=4)
        for m in models:
            self.out.write(f"{m.name:<{width}}  {m.mode:<8}  {m.description}\n")

    def error(self, error: SagewireError) -> None:
        if self.as_json:
            doc = {
                "code": error.code.name,
                "message": error.message,
                "reason": error.reason,
                "retry_after": error.retry_after,
                "field_violations": [list(v) for v in error.field_violations],
            }
            self.err.write(json.dumps({"error": doc}) + "\n")
            return
        reason = f" ({error.reason})" if error.reason else ""
        self.err.write(f"error: {error.code.name}{reason}: {error.message}\n")
        if error.retry_after is not None:
            self.err.write(f"retry after {error.retry_after:g} s\n")


def progress_bar(
    label: str, total: int | None
) -> tuple[Callable[[int, int | None], None], tqdm[Any]]:
    """A byte progress bar on stderr (silent when stderr is not a terminal) and its update
    callback, shaped as the client's `progress=` argument."""
    bar: tqdm[Any] = tqdm(
        total=total,
        desc=label,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not sys.stderr.isatty(),
        file=sys.stderr,
        leave=False,
    )

    def update(done: int, known_total: int | None) -> None:
        if known_total is not None and bar.total != known_total:
            bar.total = known_total
        bar.update(done - bar.n)

    return update, bar
