"""The background reader keeps order, passes errors through and stops when the caller does."""

from __future__ import annotations

import threading

import pytest

from vectorstore import prefetch


def test_yields_every_item_in_order():
    assert list(prefetch(iter(range(1000)), depth=3)) == list(range(1000))
    assert list(prefetch([])) == []


def test_producer_error_reaches_the_caller_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise KeyError("bad batch")

    it = prefetch(items())
    assert [next(it), next(it)] == [1, 2]
    with pytest.raises(KeyError, match="bad batch"):
        next(it)


def test_stopping_early_closes_the_source_and_the_worker():
    closed = threading.Event()

    def items():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    before = threading.active_count()
    it = prefetch(items(), depth=2)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()
    assert closed.wait(5)
    assert threading.active_count() == before


def test_work_runs_ahead_of_the_caller():
    produced = []

    def items():
        for i in range(4):
            produced.append(i)
            yield i

    it = prefetch(items(), depth=2)
    assert next(it) == 0
    for _ in range(100):  # the worker fills the queue while the caller holds item 0
        if len(produced) >= 3:
            break
        threading.Event().wait(0.01)
    assert len(produced) >= 3
    assert list(it) == [1, 2, 3]


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        list(prefetch([1], depth=0))
