"""Settings of async inference (`[async_jobs]` and `[routes.<name>.async]`).

Filled in by the async inference work (issue 4); kept in its own module so it evolves on its own.
"""

from __future__ import annotations

from sagewire.config.base import Strict


class AsyncJobSettings(Strict):
    """Process-wide async settings (job-id keys, staging)."""


class AsyncRouteSettings(Strict):
    """Async options of one route."""
