"""sagewire.cli.gc_tuning: a `serve` process freezes its start-up heap and collects less often."""

from __future__ import annotations

import subprocess
import sys

# In a child process: the test process keeps Python's defaults (as any embedding program does).
PROGRAM = """
import gc
from sagewire.cli import gc_tuning
assert gc.get_threshold() == (700, 10, 10), gc.get_threshold()
kept = [object() for _ in range(10)] + [[i] for i in range(1000)]
before = gc.get_freeze_count()
gc_tuning.settle()
print(gc.get_threshold(), gc.get_freeze_count() - before >= 1000)
"""


def test_settle_freezes_the_heap_and_raises_the_thresholds() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split("\n")[0] == "(20000, 20, 10) True"
