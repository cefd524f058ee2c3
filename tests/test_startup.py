"""startup.py: the collector is paused while a command starts, and back on, with start-up's objects frozen, after."""

from __future__ import annotations

import gc

import pytest

from yolofuse_scale.startup import collector_paused


@pytest.fixture
def collector():
    """Leave the worker's collector as conftest.py set it: on, with what exists frozen."""
    yield
    gc.freeze()
    gc.enable()


def test_the_block_runs_without_the_collector_and_what_it_made_is_frozen(collector):
    gc.unfreeze()
    made = None
    with collector_paused():
        assert not gc.isenabled()
        made = [object() for _ in range(10)], {"a": [1, 2]}
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0  # the worker's objects and the block's: later collections skip them
    assert made is not None


def test_an_error_in_the_block_turns_the_collector_back_on(collector):
    with pytest.raises(ValueError), collector_paused():
        raise ValueError("bad input")
    assert gc.isenabled()


def test_nested_or_already_off_it_changes_nothing(collector):
    gc.unfreeze()
    with collector_paused():
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled() and gc.get_freeze_count() == 0  # the outer block decides
    assert gc.isenabled()
    gc.unfreeze()
    gc.disable()  # the caller's choice stays
    with collector_paused():
        pass
    assert not gc.isenabled() and gc.get_freeze_count() == 0
