"""bench.lean_call's measuring run: it drives the real lean path against its canned answer and
gets the body back whole (a run that failed or changed the body would print no figure)."""

from __future__ import annotations

from bench.lean_call import _run


def test_one_run_invokes_through_the_lean_path_and_prints_cpu_per_call() -> None:
    assert _run(None, 50) > 0  # the child process itself, as the tool starts it
