"""An adaptive concurrency limit: how many calls a route lets through to its endpoint now.

The design follows Envoy's adaptive concurrency filter (its "gradient controller",
envoyproxy.io/docs: http_filters/adaptive_concurrency_filter), reduced to what one route needs:

- **minRTT**, the endpoint's latency without queueing, is measured by pinning the limit to
  `min_limit` until `probe_samples` calls admitted during the probe have finished, and taking
  their median. This happens when the limiter starts and again every `probe_interval_s`
  (jittered ±15 %), so the baseline follows a model that got slower or faster and never drifts
  up with the very queue it should detect.
- Otherwise, every `update_interval_s` (and at least 10 calls) the median latency of the calls
  finished in that window (sampleRTT) moves the limit. Over the target minRTT × (1 + tolerance)
  the endpoint is queueing: limit × max(0.5, target / sampleRTT), which lands near the
  concurrency the endpoint serves within the target. Within it, and when the route used at
  least half its limit: limit + 1, probing for more capacity one call at a time (an idle
  route's latency says nothing about what more load would do). Envoy adds √limit instead; with
  the few-worker model containers sagewire fronts that overshoots (limit 9 → 12 → 15 against 8
  workers before the latency of the first step is seen), and +1 per window still reaches 64
  from 4 in a few seconds under load. The limit stays within [min_limit, max_limit], max_limit
  being the route's static `max_concurrency`.

Why own code: there is no maintained Python implementation of adaptive concurrency to adopt
(Netflix's concurrency-limits is Java, Envoy's filter C++), and the logic is a page of
arithmetic. Latencies and times are passed in (sagewire.core.admission measures them), so the
limiter is tested without a clock.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field

# At most halve the limit per window (Envoy's lower bound on the gradient).
_MIN_GRADIENT = 0.5
# A window's median needs a few calls to mean anything: on a busy host single latencies jump.
_WINDOW_SAMPLES = 10


@dataclass(frozen=True)
class LimiterSettings:
    """Shapes and units: limits are call counts, times seconds, tolerance a fraction."""

    min_limit: int = 4
    max_limit: int = 64
    tolerance: float = 0.5  # latency up to minRTT × 1.5 counts as "not queueing"
    update_interval_s: float = 0.1
    probe_interval_s: float = 30.0
    probe_samples: int = 16


@dataclass
class GradientLimiter:
    """The current limit of one route. Call `sample(latency_s, in_flight, now)` for every call
    that finished well, with its latency from admission to the endpoint's answer and the calls
    the route held then; `limit` is what admission enforces."""

    settings: LimiterSettings
    rng: random.Random = field(default_factory=random.Random)
    min_rtt: float | None = None  # seconds; None until the first probe finished
    _limit: float = 0.0
    _probe_began: float | None = 0.0  # None: not probing
    _probe: list[float] = field(default_factory=list)
    _window: list[float] = field(default_factory=list)
    _window_peak: int = 0
    _window_ends: float = 0.0
    _next_probe: float = 0.0

    def __post_init__(self) -> None:
        self._limit = float(self.settings.max_limit)
        self._probe_began = -math.inf  # the first probe takes every call

    @property
    def limit(self) -> int:
        """Calls allowed in flight now: `min_limit` while probing minRTT."""
        if self._probe_began is not None:
            return self.settings.min_limit
        return max(self.settings.min_limit, min(self.settings.max_limit, math.floor(self._limit)))

    @property
    def probing(self) -> bool:
        return self._probe_began is not None

    def sample(self, latency_s: float, in_flight: int, now: float) -> None:
        s = self.settings
        if self._probe_began is not None:
            if now - latency_s < self._probe_began:
                return  # admitted before the probe: it may have queued behind the old limit
            self._probe.append(latency_s)
            if len(self._probe) >= s.probe_samples:
                self.min_rtt = statistics.median(self._probe)
                self._probe.clear()
                self._probe_began = None
                self._next_probe = now + s.probe_interval_s * (1 + self.rng.uniform(-0.15, 0.15))
                self._start_window(now)
            return
        self._window.append(latency_s)
        self._window_peak = max(self._window_peak, in_flight)
        if now < self._window_ends or len(self._window) < _WINDOW_SAMPLES:
            return
        self._update()
        if now >= self._next_probe:
            self._probe_began = now
            return
        self._start_window(now)

    def _start_window(self, now: float) -> None:
        self._window.clear()
        self._window_peak = 0
        self._window_ends = now + self.settings.update_interval_s

    def _update(self) -> None:
        s = self.settings
        assert self.min_rtt is not None  # measured before the first window
        sample_rtt = statistics.median(self._window)
        target = self.min_rtt * (1 + s.tolerance)
        if sample_rtt > target:
            limit = self._limit * max(_MIN_GRADIENT, target / sample_rtt)
        elif self._window_peak * 2 >= self.limit:
            limit = self._limit + 1
        else:
            return
        self._limit = max(float(s.min_limit), min(float(s.max_limit), limit))
