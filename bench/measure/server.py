"""The server scenario's question: the highest rate of Poisson arrivals a runtime serves while LoadGen still
calls the run VALID (p99 within the latency bound, early stopping satisfied), found as submitters find it. The
search is handed ``trial(rate) -> ServerTrial`` and ``cost(rate) -> seconds``, so its rules are tested with
made-up trials:

- coarse: from ``start_qps`` (single-stream's capacity), double a VALID rate until INVALID, or halve an INVALID
  one until VALID (at most MAX_DOUBLINGS or MAX_HALVINGS times);
- fine: bisect (geometrically) between the highest VALID and the lowest INVALID rate until within RESOLUTION;
- bounded: a trial starts only if its expected cost fits in what is left of ``budget_s``
  (:class:`BudgetTooShort` when not even the first does: LoadGen's early stopping needs its queries at any rate).

No VALID rate is a result, said in the verdict, never an error: "at any rate" when a query alone (``alone_ms``)
already takes longer than the bound, or when halving reached 1/2**MAX_HALVINGS of the capacity, where queries
barely queue; otherwise the budget ended the search first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict

from bench.results.record import ServerSearch, ServerTrial

RESOLUTION = 0.05  # the bisection stops when the INVALID rate is within 5% of the VALID one
MAX_DOUBLINGS = 4
MAX_HALVINGS = 6


class BudgetTooShort(RuntimeError):
    """Not one trial fits in the search's time budget; the message says how long one takes."""


def search(trial: Callable[[float], ServerTrial], cost: Callable[[float], float], start_qps: float, latency_bound_ms: float,
           budget_s: float, alone_ms: float | None = None,
           clock: Callable[[], float] = time.monotonic) -> tuple[ServerSearch, int]:
    """Search for the highest VALID rate; returns the search and the index (in its ``trials``) of the trial its
    figures come from: the one at ``max_qps``, else the lowest rate tried."""
    if not (start_qps > 0 and math.isfinite(start_qps)):
        raise ValueError(f"start_qps {start_qps!r}: expected a positive rate")
    began = clock()
    trials: list[ServerTrial] = []
    bounds: dict[bool, float] = {}  # True: the highest VALID rate so far; False: the lowest INVALID one

    def run(rate: float) -> ServerTrial | None:
        if clock() - began + cost(rate) > budget_s:
            return None  # would not end within the budget
        trials.append(trial(rate))
        bounds[trials[-1].valid] = rate
        return trials[-1]

    first = run(start_qps)
    if first is None:
        raise BudgetTooShort(f"one LoadGen trial at {start_qps:,.0f} queries/s (this runtime's single-stream capacity) "
                             f"takes about {cost(start_qps):.0f} s, more than the search's {budget_s:g} s "
                             "(raise --server-search-s)")
    # Why the search stopped: resolution | budget | doublings | halvings | alone.
    if not first.valid and alone_ms is not None and alone_ms > latency_bound_ms:
        ended = "alone"
    else:
        ended, rate, factor = ("doublings", start_qps, 2) if first.valid else ("halvings", start_qps, 0.5)
        for _ in range(MAX_DOUBLINGS if first.valid else MAX_HALVINGS):
            rate *= factor
            result = run(rate)
            if result is None or result.valid != first.valid:
                ended = "budget" if result is None else "resolution"
                break
    while ended != "budget" and len(bounds) == 2 and bounds[False] > bounds[True] * (1 + RESOLUTION):
        if run(math.sqrt(bounds[True] * bounds[False])) is None:
            ended = "budget"

    valid_qps, invalid_qps = bounds.get(True), bounds.get(False)
    if valid_qps is not None:
        best = max((i for i, t in enumerate(trials) if t.valid), key=lambda i: trials[i].target_qps)
    else:
        best = min(range(len(trials)), key=lambda i: trials[i].target_qps)
    chosen = trials[best]
    found = ServerSearch(latency_bound_ms, valid_qps, invalid_qps, chosen.p50_ms, chosen.p99_ms,
                         [asdict(t) for t in trials], clock() - began, budget_s)
    found.verdict = _verdict(found, chosen, ended, alone_ms, start_qps)
    return found, best


def _verdict(found: ServerSearch, chosen: ServerTrial, ended: str, alone_ms: float | None, start_qps: float) -> str:
    """One line a person reads: the max rate under the bound with its p99, or why there is none."""
    bound = f"p99 ≤ {found.latency_bound_ms:g} ms"
    if found.max_qps is not None:
        above = {"resolution": f", INVALID at {found.invalid_above_qps:,.0f}",
                 "budget": f", INVALID at {found.invalid_above_qps:,.0f}; the budget ended the bisection" if found.invalid_above_qps
                 else "; the budget ended the search before an INVALID rate",
                 "doublings": f"; VALID up to {2 ** MAX_DOUBLINGS}x its single-stream capacity, the most tried"}[ended]
        return f"max {found.max_qps:,.0f} queries/s with {bound}: p99 {_ms(found.p99_ms)} at that rate{above}"
    lowest = f"{chosen.target_qps:,.0f} queries/s, p99 {_ms(chosen.p99_ms)}" + (f": {chosen.why}" if chosen.why else "")
    if ended == "alone":
        return (f"cannot meet {bound} at any rate: a query alone takes {_ms(alone_ms)} (single-stream median); "
                f"LoadGen at {lowest}")
    if ended == "halvings":
        return (f"cannot meet {bound} at any rate: INVALID down to {chosen.target_qps:,.0f} queries/s, "
                f"1/{start_qps / chosen.target_qps:.0f} of its single-stream capacity, where queries barely queue; "
                f"LoadGen at {lowest}")
    return (f"no rate tried meets {bound}; the search's budget ended before lower rates (raise --server-search-s); "
            f"the lowest tried, LoadGen at {lowest}")


def _ms(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3g} ms"
