"""Timing candidates against each other: warm-ups, turns, the fastest call, failures; on a fake clock."""
from __future__ import annotations

import pytest

from fakedet.timing import fastest_rates


class Clock:
    """A clock that each candidate's call moves on by its next scripted duration."""

    def __init__(self):
        self.now, self.order = 0.0, []

    def __call__(self) -> float:
        return self.now

    def candidate(self, label: str, durations: list[float]):
        durations = iter(durations)

        def call():
            self.order.append(label)
            self.now += next(durations)
        return call


def test_candidates_take_turns_and_are_rated_by_their_fastest_call():
    clock = Clock()
    calls = {"a": clock.candidate("a", [2.0, 1.0, 4.0, 1.0]),  # warm-up, then one disturbed call of three
             "b": clock.candidate("b", [2.0, 1.5, 1.5, 6.0])}
    rates = fastest_rates(calls, 64, rounds=3, seconds=100, clock=clock)
    assert clock.order == ["a", "b"] + ["a", "b"] * 3                # warm-ups, then turns
    assert rates == {"a": pytest.approx(64 / 1.0), "b": pytest.approx(64 / 1.5)}


def test_a_slow_warm_up_is_not_timed_further_and_time_runs_out():
    clock = Clock()
    calls = {"fast": clock.candidate("fast", [1.0] + [1.0] * 10),
             "slow": clock.candidate("slow", [4.0])}                   # 4x the fast warm-up: its warm-up rate kept
    rates = fastest_rates(calls, 10, rounds=10, seconds=2.5, clock=clock)
    assert rates == {"fast": pytest.approx(10.0), "slow": pytest.approx(2.5)}
    assert clock.order.count("fast") == 1 + 3                        # stopped once 2.5 s of turns had passed


def test_a_candidate_that_cannot_run_is_rated_zero_and_said_why():
    clock, told = Clock(), []

    def broken():
        raise RuntimeError("no bf16 here")
    calls = {"ok": clock.candidate("ok", [1.0] * 4), "broken": broken}
    rates = fastest_rates(calls, 8, clock=clock, failed=lambda label, err: told.append((label, str(err))))
    assert rates == {"ok": pytest.approx(8.0), "broken": 0.0} and told == [("broken", "no bf16 here")]
    with pytest.raises(RuntimeError, match="no bf16"):                # errors=(): nothing is swallowed
        fastest_rates({"broken": broken}, 8, clock=clock, errors=())
