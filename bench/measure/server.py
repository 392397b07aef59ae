"""The server scenario's question: the highest rate of Poisson arrivals a runtime serves while LoadGen still
calls the run VALID (its p99 within the latency bound, early stopping satisfied), found as submitters find it:
coarse steps, then a bisection, within a time budget.

The search knows nothing of LoadGen: it is handed ``trial(rate) -> ServerTrial`` and ``cost(rate) -> seconds``
(what a trial at that rate is expected to take), so its rules are tested with made-up trials.

- Coarse: the first trial at ``start_qps`` (the capacity single-stream measured: one query at a time, one
  worker); from a VALID rate, double (at most MAX_DOUBLINGS times) until INVALID; from an INVALID one, halve (at
  most MAX_HALVINGS times) until VALID.
- Fine: bisect (geometrically) between the highest VALID and the lowest INVALID rate until they are within
  RESOLUTION of each other.
- Bounded: a trial starts only if its expected cost fits in what is left of ``budget_s``; when not even the first
  fits, :class:`BudgetTooShort` says how long one takes (LoadGen's early stopping needs its queries at any rate).

No VALID rate is a result, said in the verdict, never an error. It is "at any rate" when it is: a query alone
(``alone_ms``, single-stream's median) already takes longer than the bound, so no arrival rate can bring the
latency under it (one trial is run for LoadGen's word); or halving has brought the load down to
1/2**MAX_HALVINGS of the capacity, where queries barely queue and the latency is the query's own. Otherwise
the budget ended the search first, and the verdict says that instead.
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

    def run(rate: float) -> ServerTrial | None:
        if clock() - began + cost(rate) > budget_s:
            return None  # would not end within the budget
        trials.append(trial(rate))
        return trials[-1]

    valid_qps = invalid_qps = None
    ended = "resolution"  # why the search stopped: resolution | budget | halvings | alone | doublings
    first = run(start_qps)
    if first is None:
        raise BudgetTooShort(f"one LoadGen trial at {start_qps:,.0f} queries/s (this runtime's single-stream capacity) "
                             f"takes about {cost(start_qps):.0f} s, more than the search's {budget_s:g} s "
                             "(raise --server-search-s)")
    if first.valid:
        valid_qps, rate = start_qps, start_qps
        ended = "doublings"
        for _ in range(MAX_DOUBLINGS):
            rate *= 2
            result = run(rate)
            if result is None:
                ended = "budget"
                break
            if not result.valid:
                invalid_qps, ended = rate, "resolution"
                break
            valid_qps = rate
    elif alone_ms is not None and alone_ms > latency_bound_ms:
        invalid_qps, ended = start_qps, "alone"
    else:
        invalid_qps, rate = start_qps, start_qps
        ended = "halvings"
        for _ in range(MAX_HALVINGS):
            rate /= 2
            result = run(rate)
            if result is None:
                ended = "budget"
                break
            if result.valid:
                valid_qps, ended = rate, "resolution"
                break
            invalid_qps = rate
    while valid_qps is not None and invalid_qps is not None and invalid_qps > valid_qps * (1 + RESOLUTION):
        rate = math.sqrt(valid_qps * invalid_qps)
        result = run(rate)
        if result is None:
            ended = "budget"
            break
        if result.valid:
            valid_qps = rate
        else:
            invalid_qps = rate

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
