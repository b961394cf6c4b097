"""For the chaos run (tests/integration/test_chaos.py): the statuses docs/errors.md documents,
a recorder of every call's outcome, and the RSS of a real process read from /proc.

The documented (code, reason) pairs are parsed from the tables of docs/errors.md and
docs/rest.md (every table with a `code` and a `reason` column), so a reason that is not
documented fails the run instead of being accepted by a hand-kept list.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_TICKED = re.compile(r"`([A-Z][A-Z0-9_]*)`")
# Rows of this section document sagewire's own bugs ("internal error in sagewire (incident …)"):
# documented, but a chaos run that produces one has found a bug.
BUG_SECTIONS = ("Unexpected errors",)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def documented_statuses(
    paths: tuple[str, ...] = ("docs/errors.md", "docs/rest.md"),
    exclude_sections: tuple[str, ...] = BUG_SECTIONS,
) -> set[tuple[str, str]]:
    """Every (gRPC code name, ErrorInfo reason) the docs' tables list; reason "" where a row
    says `none` (a status without ErrorInfo, e.g. the caller's own deadline)."""
    found: set[tuple[str, str]] = set()
    for path in paths:
        section = ""
        columns: dict[str, int] | None = None
        for line in (REPO / path).read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                section, columns = line.lstrip("#").strip(), None
                continue
            if not line.startswith("|"):
                columns = None
                continue
            cells = _cells(line)
            if columns is None:
                names = [cell.lower() for cell in cells]
                if "code" in names and "reason" in names:
                    columns = {"code": names.index("code"), "reason": names.index("reason")}
                continue
            if set(line) <= set("|-: ") or section in exclude_sections:
                continue
            codes = _TICKED.findall(cells[columns["code"]])
            reason_cell = cells[columns["reason"]]
            reasons = _TICKED.findall(reason_cell)
            if reason_cell.startswith("none"):
                reasons.append("")
            found.update((code, reason) for code in codes for reason in reasons)
    return found


@dataclass
class Outcomes:
    """Every call's outcome by RPC kind: "OK", or "CODE/REASON" for a failure."""

    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    hung: list[str] = field(default_factory=list)  # calls still running past deadline + grace
    examples: dict[str, str] = field(default_factory=dict)  # first message per failure
    # grpc.aio's local INTERNAL on a send racing the end of a client stream, by kind
    client_local: Counter[str] = field(default_factory=Counter)

    def ok(self, kind: str) -> None:
        self.by_kind.setdefault(kind, Counter())["OK"] += 1

    def failed(self, kind: str, code: str, reason: str, message: str = "") -> None:
        key = f"{code}/{reason}"
        self.by_kind.setdefault(kind, Counter())[key] += 1
        self.examples.setdefault(f"{kind} {key}", message[:300])

    def failures(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counts in self.by_kind.values():
            total.update({key: n for key, n in counts.items() if key != "OK"})
        return total

    def undocumented(self, documented: set[tuple[str, str]]) -> dict[str, str]:
        """Failures whose (code, reason) the docs do not list, with an example message."""
        out = {}
        for kind, counts in self.by_kind.items():
            for key in counts:
                if key == "OK":
                    continue
                code, _, reason = key.partition("/")
                if (code, reason) not in documented:
                    out[f"{kind} {key}"] = self.examples.get(f"{kind} {key}", "")
        return out

    def table(self) -> str:
        lines = []
        for kind, counts in sorted(self.by_kind.items()):
            parts = ", ".join(f"{key} {n}" for key, n in counts.most_common())
            lines.append(f"  {kind}: {parts}")
        if self.client_local:
            lines.append(
                f"  grpc.aio local send race (not from sagewire): {dict(self.client_local)}"
            )
        return "\n".join(lines)


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """The process's resident set size from /proc/<pid>/status (kB there): `VmRSS` in all, or
    one part of it, `RssAnon` (heap and other anonymous memory) or `RssFile` (mapped files:
    code and shared libraries, which the kernel may drop and read again under memory
    pressure)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for pid {pid}")
