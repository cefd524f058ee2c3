"""The step-sharded sampler: micro-batches per optimizer step do not depend on the world size."""

import pytest

from yolofuse_scale.data.sampler import ShardSampler, StepShardedBatchSampler


def _step_sets(world: int, accum: int, n: int = 50, bs: int = 4, epoch: int = 3, shuffle: bool = True):
    """For each optimizer step, the set of micro-batches (as tuples) all ranks consume."""
    per_rank = []
    for r in range(world):
        s = StepShardedBatchSampler(n, bs, world, r, accum, shuffle=shuffle, seed=7)
        s.set_epoch(epoch)
        per_rank.append(list(s))
    steps = len(per_rank[0]) // accum
    return [
        sorted(tuple(b) for r in range(world) for b in per_rank[r][k * accum : (k + 1) * accum]) for k in range(steps)
    ]


def test_two_ranks_equal_one_rank_accumulating():
    assert _step_sets(world=2, accum=1) == _step_sets(world=1, accum=2)
    assert _step_sets(world=2, accum=2) == _step_sets(world=1, accum=4) == _step_sets(world=4, accum=1)


def test_no_sample_twice_and_tail_dropped():
    s = StepShardedBatchSampler(50, 4, world_size=2, rank=0, grad_accum=2)
    assert s.steps_per_epoch == 3  # 12 micro-batches // 4 per step
    seen = [i for step in _step_sets(2, 2) for b in step for i in b]
    assert len(seen) == len(set(seen)) == 3 * 4 * 4


def test_order_is_a_function_of_seed_and_epoch():
    a, b = StepShardedBatchSampler(40, 4, seed=1), StepShardedBatchSampler(40, 4, seed=1)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    fixed = StepShardedBatchSampler(40, 4, shuffle=False)
    assert list(fixed)[0] == [0, 1, 2, 3]


def test_resume_skips_exactly_the_steps_done():
    full = StepShardedBatchSampler(64, 4, world_size=2, rank=1, grad_accum=2)
    full.set_epoch(1)
    rest = StepShardedBatchSampler(64, 4, world_size=2, rank=1, grad_accum=2)
    rest.set_epoch(1, start_step=2)
    assert list(rest) == list(full)[2 * 2 :] and len(rest) == len(list(rest))


def test_eval_shards_cover_everything_once():
    shards = [list(ShardSampler(11, 3, r)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(11))
    with pytest.raises(ValueError):
        StepShardedBatchSampler(10, 2, world_size=2, rank=2)
