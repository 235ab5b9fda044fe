"""The retention benchmark carries a rejected sleep's sessions into the next sleep like the worker does."""

from __future__ import annotations

from typing import Any

from bench.retention import advance
from sleepd.registry import BASE


def test_rejected_sleeps_wait_for_the_next_then_are_set_aside_after_max_rejections() -> None:
    state: dict[str, Any] = {"active": BASE, "pending": [], "rejections": 0}
    assert advance(state, 1, "v0001", 3) == 0 and state["active"] == "v0001"
    assert advance(state, 2, None, 3) == 0 and state["pending"] == [2]  # sleep 3 retries sleep 2's sessions
    assert advance(state, 3, "v0002", 3) == 0 and state == {"active": "v0002", "pending": [], "rejections": 0}
    for n in (4, 5):
        assert advance(state, n, None, 3) == 0
    assert state["pending"] == [4, 5]
    assert advance(state, 6, None, 3) == 3  # the third rejection in a row sets sleeps 4-6 aside
    assert state == {"active": "v0002", "pending": [], "rejections": 0}
