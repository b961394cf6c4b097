"""An adaptive concurrency limit: how many calls a route lets through to its endpoint now.

The design follows Envoy's adaptive concurrency filter (its "gradient controller",
envoyproxy.io/docs: http_filters/adaptive_concurrency_filter), reduced to what one route needs:

- **minRTT**, the endpoint's latency without queueing, is the median latency of `probe_samples`
  calls admitted while the limit is pinned low (a *probe*). The first probe, when the limiter
  starts and knows nothing, pins it to `min_limit`. Later ones (every `probe_interval_s`,
  jittered ±15 %) pin it to a fraction of the current limit: 3/4 × limit / (1 + tolerance),
  never below `min_limit`. Why that is low enough: a queueing endpoint's latency grows with the
  calls it holds (minRTT × in_flight / capacity, Little's law), and the limit only grows while
  latency stays within minRTT × (1 + tolerance), so a limit that is within it is at most
  capacity × (1 + tolerance), and limit / (1 + tolerance) calls do not queue; the 3/4 keeps a
  margin, so a probe run a little above capacity (a noisy window) measures a slightly high
  minRTT that the next probe corrects, instead of a baseline that ratchets up with the queue it
  should detect. A probe therefore starts only after a window whose latency was within target,
  or at `min_limit`, where the limit cannot go lower anyway. That premise fails when the limit
  was never exercised (a route back from idle answers its first calls from an empty container
  whatever its limit), and a probe at a share of an untested limit queues: so a probe that
  measures more than minRTT × (1 + tolerance) is not believed but repeated at `min_limit`, whose
  answer stands (the model may really have become slower). As in Envoy, a limit stuck at
  `min_limit` for 5 windows in a row probes at once (the model likely got slower and the old
  minRTT reads its every call as queueing).
- Otherwise, every `update_interval_s` (and at least 10 calls) the median latency of the calls
  finished in that window (sampleRTT) moves the limit. Over the target minRTT × (1 + tolerance)
  the endpoint is queueing: limit × max(0.25, target / sampleRTT), which lands near the
  concurrency the endpoint serves within the target. Then the calls admitted before that cut
  are left out of the windows (one cut per round trip, as TCP cuts its window): their latency
  is the queue of the higher limit, and cutting again on it took a surge from 64 straight down
  to `min_limit` in the bench. The same holds after every move and after a probe: a window
  only judges calls admitted under the limit it judges (growing on the calls of a lower limit,
  or of the probe's, adds steps before their queue shows; with this rule the bench's admitted
  median fell from 385 to 270 ms). So a cut may go deeper than Envoy's (at most halving per
  window): to a quarter at most. Within the target, and when the route used at least half its limit:
  limit + 1, probing for more capacity one call at a time (an idle
  route's latency says nothing about what more load would do). Envoy adds √limit instead; with
  the few-worker model containers sagewire fronts that overshoots (limit 9 → 12 → 15 against 8
  workers before the latency of the first step is seen), and +1 per window still reaches 64
  from 4 in a few seconds under load. The limit stays within [min_limit, max_limit], max_limit
  being the route's static `max_concurrency`.

Why not Envoy's probe as is: it pins the limit to `min_concurrency` (3) every minute; in front of
a model container with a handful of workers that halves the endpoint's throughput for each
probe (about 1 s at sagewire's 30 s interval: goodput 88 % of capacity under overload in
bench/overload.py). Why not Netflix's Gradient2 (concurrency-limits), which has no probe and
compares the recent latency with a long exponential average of all latencies instead: under a
sustained overload that average follows the queue up (its own docstring says the long RTT
"is expected to trend higher" under load), so the latency it holds is relative to a drifting
baseline, while issue 14 bounds admitted latency against the *unloaded* one.

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

# At most quarter the limit per cut. Envoy halves at most per window; with one cut per round
# trip (below), halving took a surge on 64 about three round trips to reach 8 workers' limit.
_MIN_GRADIENT = 0.25
# A window's median needs a few calls to mean anything: on a busy host single latencies jump.
_WINDOW_SAMPLES = 10
# A probe runs at this share of limit / (1 + tolerance): below the endpoint's capacity, with margin.
_PROBE_SHARE = 0.75
# Windows in a row at min_limit after which minRTT is measured again at once (Envoy's rule).
_STUCK_WINDOWS = 5


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
    """The current limit of one route. Call `sample(latency_s, in_flight, now, admitted_at)`
    for every call that finished well, with its latency from admission to the endpoint's answer,
    the calls the route held then and when it was admitted; `limit` is what admission enforces."""

    settings: LimiterSettings
    rng: random.Random = field(default_factory=random.Random)
    min_rtt: float | None = None  # seconds; None until the first probe finished
    _limit: float = 0.0
    _probe_began: float | None = 0.0  # None: not probing
    _probe_limit: int = 0
    _probe: list[float] = field(default_factory=list)
    _window: list[float] = field(default_factory=list)
    _window_peak: int = 0
    _window_ends: float = 0.0
    _next_probe: float = 0.0
    _windows_at_min: int = 0
    _changed_at: float = -math.inf  # when the limit last moved (or a probe ended)

    def __post_init__(self) -> None:
        self._limit = float(self.settings.max_limit)
        self._probe_began = -math.inf  # the first probe takes every call, at min_limit
        self._probe_limit = self.settings.min_limit

    @property
    def limit(self) -> int:
        """Calls allowed in flight now: the probe's limit while minRTT is measured."""
        if self._probe_began is not None:
            return self._probe_limit
        return self._bounded(self._limit)

    @property
    def probing(self) -> bool:
        return self._probe_began is not None

    def sample(
        self, latency_s: float, in_flight: int, now: float, admitted_at: float | None = None
    ) -> None:
        """`admitted_at`: when the call was admitted (default `now - latency_s`, right when
        a call ends at its answer; a stream holds its slot past its first part, so admission
        passes it: the probe and the cut leave out calls admitted before them)."""
        s = self.settings
        if admitted_at is None:
            admitted_at = now - latency_s
        if self._probe_began is not None:
            if admitted_at < self._probe_began:
                return  # admitted before the probe: it may have queued behind the old limit
            self._probe.append(latency_s)
            if len(self._probe) >= s.probe_samples:
                measured = statistics.median(self._probe)
                self._probe.clear()
                if self._doubt(measured):  # it may have queued: measure again at min_limit
                    self._probe_began = now
                    self._probe_limit = s.min_limit
                    return
                self.min_rtt = measured
                self._probe_began = None
                self._windows_at_min = 0
                self._next_probe = now + s.probe_interval_s * (1 + self.rng.uniform(-0.15, 0.15))
                self._changed_at = now  # the probe's calls saw its low limit, not this one
                self._start_window(now)
            return
        if admitted_at < self._changed_at:
            return  # admitted before the limit last moved: its latency is the old limit's
        self._window.append(latency_s)
        self._window_peak = max(self._window_peak, in_flight)
        if now < self._window_ends or len(self._window) < _WINDOW_SAMPLES:
            return
        within = self._update(now)
        at_min = self.limit <= s.min_limit
        self._windows_at_min = self._windows_at_min + 1 if at_min else 0
        due = now >= self._next_probe and (within or at_min)
        if due or self._windows_at_min >= _STUCK_WINDOWS:
            self._probe_began = now
            share = _PROBE_SHARE * self._limit / (1 + s.tolerance)
            self._probe_limit = self._bounded(share)
            return
        self._start_window(now)

    def _doubt(self, measured: float) -> bool:
        """A probe above min_limit that measured more than minRTT × (1 + tolerance)."""
        s = self.settings
        return (
            self._probe_limit > s.min_limit
            and self.min_rtt is not None
            and measured > self.min_rtt * (1 + s.tolerance)
        )

    def _bounded(self, limit: float) -> int:
        return max(self.settings.min_limit, min(self.settings.max_limit, math.floor(limit)))

    def _start_window(self, now: float) -> None:
        self._window.clear()
        self._window_peak = 0
        self._window_ends = now + self.settings.update_interval_s

    def _update(self, now: float) -> bool:
        """Move the limit from the window's median latency; True when it was within target."""
        s = self.settings
        assert self.min_rtt is not None  # measured before the first window
        sample_rtt = statistics.median(self._window)
        target = self.min_rtt * (1 + s.tolerance)
        within = sample_rtt <= target
        if not within:
            limit = self._limit * max(_MIN_GRADIENT, target / sample_rtt)
        elif self._window_peak * 2 >= self.limit:
            limit = self._limit + 1
        else:
            return within
        bounded = max(float(s.min_limit), min(float(s.max_limit), limit))
        if math.floor(bounded) != math.floor(self._limit):
            self._changed_at = now
        self._limit = bounded
        return within
