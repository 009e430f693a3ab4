"""Layer maps for any depths: the strategies, validation messages and the user-extensible registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kdistill.config import MappingConfig
from kdistill.distill.mapping import (
    MAPPINGS,
    LayerPair,
    bottom_map,
    build_map,
    embeddings_map,
    explicit_map,
    many_to_one_map,
    top_map,
    uniform_map,
)
from kdistill.errors import KDistillError


def teachers(pairs: list[LayerPair]) -> list[tuple[int, ...]]:
    assert [p.student for p in pairs] == list(range(1, len(pairs) + 1))
    return [p.teacher for p in pairs]


@pytest.mark.parametrize(("nt", "ns", "expected"), [
    (6, 3, [2, 4, 6]),
    (6, 4, [2, 3, 5, 6]),
    (12, 6, [2, 4, 6, 8, 10, 12]),
    (5, 2, [3, 5]),
    (12, 4, [3, 6, 9, 12]),
    (6, 6, [1, 2, 3, 4, 5, 6]),
    (6, 1, [6]),
])
def test_uniform(nt: int, ns: int, expected: list[int]) -> None:
    assert teachers(uniform_map(nt, ns)) == [(t,) for t in expected]


def test_uniform_deeper_student_never_maps_to_embeddings() -> None:
    assert teachers(uniform_map(1, 3)) == [(1,), (1,), (1,)]


def test_top_and_bottom() -> None:
    assert teachers(top_map(6, 3)) == [(4,), (5,), (6,)]
    assert teachers(bottom_map(6, 3)) == [(1,), (2,), (3,)]
    with pytest.raises(KDistillError, match="no deeper"):
        top_map(3, 4)
    with pytest.raises(KDistillError, match="no deeper"):
        build_map(MappingConfig(strategy="bottom"), 3, 4)


def test_many_to_one_12_to_6() -> None:
    assert teachers(many_to_one_map(12, 6, "all")) == [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)]
    assert teachers(many_to_one_map(12, 6, "last")) == [(2,), (4,), (6,), (8,), (10,), (12,)]


def test_many_to_one_7_to_3() -> None:
    assert teachers(many_to_one_map(7, 3, "all")) == [(1, 2), (3, 4), (5, 6, 7)]
    assert teachers(many_to_one_map(7, 3)) == [(2,), (4,), (7,)]


def test_many_to_one_groups_partition_teacher_for_all_depths() -> None:
    for nt in range(1, 25):
        for ns in range(1, nt + 1):
            layers = [t for p in many_to_one_map(nt, ns, "all") for t in p.teacher]
            assert layers == list(range(1, nt + 1)), (nt, ns)


def test_build_map_strategies_from_config() -> None:
    assert build_map(MappingConfig(), 6, 3) == uniform_map(6, 3)
    cfg = MappingConfig(strategy="many_to_one", group="all")
    assert build_map(cfg, 12, 6) == many_to_one_map(12, 6, "all")
    assert build_map(MappingConfig(strategy="top"), 12, 6) == top_map(12, 6)


def test_explicit_pairs() -> None:
    pairs = explicit_map([[1, 2], [2, [3, 4]], (3, 6)])
    assert pairs == [LayerPair(1, (2,)), LayerPair(2, (3, 4)), LayerPair(3, (6,))]
    cfg = MappingConfig(strategy="explicit", pairs=[[1, 2], [3, [5, 6]]])
    assert build_map(cfg, 6, 3) == [LayerPair(1, (2,)), LayerPair(3, (5, 6))]


def test_explicit_out_of_range_student_names_the_layer() -> None:
    cfg = MappingConfig(strategy="explicit", pairs=[[1, 2], [5, 6]])
    with pytest.raises(KDistillError) as err:
        build_map(cfg, 6, 3)
    assert str(err.value) == "mapping names student layer 5 but the student has 3 layers (valid 0-3)"


def test_explicit_out_of_range_teacher_names_the_layer() -> None:
    cfg = MappingConfig(strategy="explicit", pairs=[[1, [2, 9]]])
    with pytest.raises(KDistillError, match="teacher layer 9 but the teacher has 6 layers \\(valid 0-6\\)"):
        build_map(cfg, 6, 3)
    with pytest.raises(KDistillError, match="student layer -1"):
        build_map(MappingConfig(strategy="explicit", pairs=[[-1, 2]]), 6, 3)


def test_duplicates_refused() -> None:
    with pytest.raises(KDistillError, match="student layer 1 more than once"):
        build_map(MappingConfig(strategy="explicit", pairs=[[1, 2], [1, 3]]), 6, 3)
    with pytest.raises(KDistillError, match="repeats a teacher layer"):
        build_map(MappingConfig(strategy="explicit", pairs=[[1, [2, 2]]]), 6, 3)


def test_explicit_bad_pair_shape() -> None:
    with pytest.raises(KDistillError, match="must be"):
        explicit_map([[1, 2, 3]])
    with pytest.raises(KDistillError, match="no teacher layer"):
        explicit_map([[1, []]])


def test_include_embeddings() -> None:
    pairs = build_map(MappingConfig(), 6, 3, include_embeddings=True)
    assert pairs == [LayerPair(0, (0,)), LayerPair(1, (2,)), LayerPair(2, (4,)), LayerPair(3, (6,))]
    cfg = MappingConfig(strategy="explicit", pairs=[[0, 0], [3, 6]])
    assert build_map(cfg, 6, 3, include_embeddings=True) == [LayerPair(0, (0,)), LayerPair(3, (6,))]
    assert embeddings_map() == [LayerPair(0, (0,))]


def test_layer_pair_is_hashable_and_normalised() -> None:
    assert LayerPair(1, [2, 3]) == LayerPair(1, (2, 3))  # type: ignore[arg-type]
    assert LayerPair(1, 2) == LayerPair(1, (2,))  # type: ignore[arg-type]
    assert len({LayerPair(1, (2,)), LayerPair(1, (2,))}) == 1


def test_zero_depth_refused() -> None:
    with pytest.raises(KDistillError, match="at least one layer"):
        uniform_map(0, 3)


@pytest.fixture
def temp_strategy() -> Iterator[str]:
    name = "test_every_other"
    yield name
    MAPPINGS._items.pop(name, None)


def test_user_strategy_and_unknown_strategy(temp_strategy: str) -> None:
    @MAPPINGS.register(temp_strategy)
    def every_other(cfg: MappingConfig, nt: int, ns: int) -> list[LayerPair]:
        return [LayerPair(i, (2 * i,)) for i in range(1, ns + 1)]

    cfg = MappingConfig.model_construct(strategy=temp_strategy, pairs=None, group="last")
    assert teachers(build_map(cfg, 6, 3)) == [(2,), (4,), (6,)]
    with pytest.raises(KDistillError, match="teacher layer 8"):
        build_map(cfg, 6, 4)  # user strategies are validated too
    with pytest.raises(KDistillError, match=r"unknown mapping strategy 'nope' \(valid: .*uniform"):
        build_map(MappingConfig.model_construct(strategy="nope", pairs=None, group="last"), 6, 3)
    with pytest.raises(KDistillError, match="already registered"):
        MAPPINGS.add("uniform", every_other)


def test_last_maps_only_the_last_layers() -> None:
    from kdistill.distill.mapping import last_map

    assert last_map(12, 6) == [LayerPair(6, (12,))]
    assert last_map(6, 3) == [LayerPair(3, (6,))] and last_map(3, 6) == [LayerPair(6, (3,))]
    assert build_map(MappingConfig(strategy="last"), 6, 3) == [LayerPair(3, (6,))]
