"""Length-grouped shuffling: every example once per epoch, reproducible per (seed, epoch), less padding."""

from __future__ import annotations

import random

from kdistill.sampling import LengthGroupedSampler


def _lengths(n: int = 1000, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(3, 64) for _ in range(n)]


def _padded_tokens(order: list[int], lengths: list[int], batch: int) -> int:
    return sum(max(lengths[i] for i in order[k:k + batch]) * len(order[k:k + batch])
               for k in range(0, len(order), batch))


def test_each_index_once_and_reproducible_per_epoch() -> None:
    lengths = _lengths(1003)
    s = LengthGroupedSampler(lengths, batch_size=32, seed=7)
    e0 = list(s)
    assert sorted(e0) == list(range(1003)) and len(s) == 1003
    assert list(LengthGroupedSampler(lengths, batch_size=32, seed=7)) == e0  # same seed, same epoch
    s.set_epoch(1)
    e1 = list(s)
    assert sorted(e1) == list(range(1003)) and e1 != e0
    s.set_epoch(0)
    assert list(s) == e0  # a resumed run sees the same batches
    assert list(LengthGroupedSampler(lengths, batch_size=32, seed=8)) != e0


def test_grouping_pads_far_less_than_random_order() -> None:
    lengths = _lengths(2000)
    grouped = list(LengthGroupedSampler(lengths, batch_size=32, seed=1))
    shuffled = list(range(2000))
    random.Random(1).shuffle(shuffled)
    real = sum(lengths)
    assert _padded_tokens(grouped, lengths, 32) < 1.1 * real < 0.7 * _padded_tokens(shuffled, lengths, 32)


def test_only_the_last_batch_is_short_and_batches_are_not_sorted_globally() -> None:
    lengths = _lengths(1000)
    order = list(LengthGroupedSampler(lengths, batch_size=32, seed=3))
    batches = [order[k:k + 32] for k in range(0, 1000, 32)]
    assert [len(b) for b in batches[:-1]] == [32] * 31 and len(batches[-1]) == 1000 % 32
    maxima = [max(lengths[i] for i in b) for b in batches[:-1]]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)
