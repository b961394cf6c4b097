"""Settings of Converse sessions on a route (`[routes.<name>.converse]`).

Filled in by the Converse work (issue 5); kept in its own module so it evolves on its own.
"""

from __future__ import annotations

from sagewire.config.base import Strict


class ConverseSettings(Strict):
    """How Converse sessions behave on a route."""
