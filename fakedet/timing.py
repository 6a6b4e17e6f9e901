"""Timing candidates against each other on a machine that other work shares.

``fastest_rates`` is how ``runtimes`` chooses an inference engine by measuring: every candidate is
warmed up once, then the candidates take turns, one call each per round, and each is rated by its
fastest call. Other work on the machine only ever slows a
call down, so the fastest call is the least disturbed one, and taking turns puts every candidate
under the same drift in load instead of giving one the quiet minute and another the busy one.
Torch-free.
"""
from __future__ import annotations

import time
from typing import Callable

SLOW = 3  # a candidate whose warm-up is this many times slower than the best warm-up is not timed further


def fastest_rates(calls: dict[str, Callable[[], object]], items: int, *, rounds: int = 3, seconds: float = 3.0,
                  errors: tuple[type[Exception], ...] = (RuntimeError,),
                  failed: Callable[[str, Exception], None] | None = None,
                  clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Items per second of each of ``calls`` (label -> a call that processes ``items`` items).

    One warm-up call each (a candidate whose warm-up is ``SLOW`` times slower than the best one keeps
    its warm-up rate), then up to ``rounds`` rounds of one call per remaining candidate, stopping early
    once the timed rounds have taken ``seconds`` per candidate. A call raising one of ``errors`` rates its
    candidate 0 (``failed(label, error)`` is told) and drops it."""
    def run(label: str) -> float | None:  # seconds of one call, None when it failed
        try:
            return _seconds(calls[label], clock)
        except errors as err:
            if failed:
                failed(label, err)
            return None

    warm = {label: run(label) for label in calls}
    rates = {label: items / t if t else 0.0 for label, t in warm.items()}
    best = max(rates.values(), default=0.0)
    timed = {label: float("inf") for label, rate in rates.items() if rate > 0 and rate >= best / SLOW}  # fastest call
    start = clock()
    for _ in range(rounds):
        for label in list(timed):
            t = run(label)
            if t is None:
                del timed[label]
                rates[label] = 0.0
            else:
                timed[label] = min(timed[label], t)
        if clock() - start >= seconds * max(len(timed), 1):
            break
    rates.update({label: items / fastest for label, fastest in timed.items() if fastest < float("inf")})
    return rates


def _seconds(call: Callable[[], object], clock: Callable[[], float]) -> float:
    begin = clock()
    call()
    return max(clock() - begin, 1e-9)
