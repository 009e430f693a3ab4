"""Layer maps: which teacher layer(s) teach which student layer, for any pair of depths.

Layers count from 1 (the output of transformer block i); 0 is the embeddings output, matching the
index of Hugging Face's `hidden_states` tuple. Strategies live in `MAPPINGS` so users can add their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from kdistill.config import MappingConfig
from kdistill.errors import KDistillError
from kdistill.registry import Registry


@dataclass(frozen=True)
class LayerPair:
    """One student layer and the teacher layer(s) it learns from (several = many-to-one, compared averaged
    or each in turn, as the trainer decides)."""

    student: int  # 1-based student layer; 0 = embeddings output
    teacher: tuple[int, ...]  # one or more 1-based teacher layers; 0 = embeddings

    def __post_init__(self) -> None:
        # Accept a bare int or a list for convenience; store a tuple so pairs stay hashable.
        t = self.teacher
        teacher = (t,) if isinstance(t, int) else tuple(t)
        if not teacher:
            raise KDistillError(f"mapping gives student layer {self.student} no teacher layer")
        object.__setattr__(self, "teacher", teacher)


EMBEDDINGS_PAIR = LayerPair(0, (0,))


def _depths(n_teacher: int, n_student: int) -> None:
    if n_teacher < 1 or n_student < 1:
        raise KDistillError(f"layer maps need at least one layer each "
                            f"(teacher {n_teacher}, student {n_student})")


def _not_deeper(strategy: str, n_teacher: int, n_student: int) -> None:
    if n_student > n_teacher:
        raise KDistillError(f"mapping strategy '{strategy}' needs a student no deeper than the teacher "
                            f"(student {n_student} layers, teacher {n_teacher}); use 'uniform' or 'explicit'")


def uniform_map(n_teacher: int, n_student: int) -> list[LayerPair]:
    """Student i <- teacher floor(i*Lt/Ls + 0.5): evenly spread, ending on the last teacher layer.

    Rounds rather than requiring Ls | Lt, so 6->4 gives 2,3,5,6. Integer arithmetic avoids float ties;
    a student deeper than the teacher repeats teacher layers (never maps to the embeddings).
    """
    _depths(n_teacher, n_student)
    return [LayerPair(i, (max(1, (2 * i * n_teacher + n_student) // (2 * n_student)),))
            for i in range(1, n_student + 1)]


def top_map(n_teacher: int, n_student: int) -> list[LayerPair]:
    """Student i <- teacher Lt-Ls+i: learn from the top layers, closest to the task head."""
    _depths(n_teacher, n_student)
    _not_deeper("top", n_teacher, n_student)
    return [LayerPair(i, (n_teacher - n_student + i,)) for i in range(1, n_student + 1)]


def bottom_map(n_teacher: int, n_student: int) -> list[LayerPair]:
    """Student i <- teacher i: matches students initialised from the teacher's first layers."""
    _depths(n_teacher, n_student)
    _not_deeper("bottom", n_teacher, n_student)
    return [LayerPair(i, (i,)) for i in range(1, n_student + 1)]


def many_to_one_map(n_teacher: int, n_student: int, group: str = "last") -> list[LayerPair]:
    """Student i <- teacher layers (floor((i-1)*Lt/Ls), floor(i*Lt/Ls)]: the groups partition the teacher.

    group="all" keeps each whole group (12->6: (1,2), (3,4), ...); group="last" keeps only its last layer.
    """
    _depths(n_teacher, n_student)
    _not_deeper("many_to_one", n_teacher, n_student)
    if group not in ("last", "all"):
        raise KDistillError(f"many_to_one group must be 'last' or 'all', got '{group}'")
    pairs = []
    for i in range(1, n_student + 1):
        lo, hi = (i - 1) * n_teacher // n_student, i * n_teacher // n_student
        layers = tuple(range(lo + 1, hi + 1))
        pairs.append(LayerPair(i, layers if group == "all" else layers[-1:]))
    return pairs


def last_map(n_teacher: int, n_student: int) -> list[LayerPair]:
    """Student Ls <- teacher Lt only: MiniLM's last-layer self-attention and value-relation transfer
    (Wang et al. 2020), which leaves the student's lower layers free to organise themselves."""
    _depths(n_teacher, n_student)
    return [LayerPair(n_student, (n_teacher,))]


def explicit_map(pairs: Iterable[Sequence[int | Sequence[int]]]) -> list[LayerPair]:
    """From [[s, t], [s, [t1, t2]]] as written in YAML; ranges are checked by `build_map`."""
    out = []
    for p in pairs:
        if len(p) != 2:
            raise KDistillError(f"mapping pair {list(p)} must be [student, teacher] "
                                "or [student, [teacher, ...]]")
        s, t = p
        out.append(LayerPair(int(s), (int(t),) if isinstance(t, int) else tuple(int(x) for x in t)))
    return out


MappingStrategy = Callable[[MappingConfig, int, int], list[LayerPair]]
"""A strategy takes the mapping config and (n_teacher, n_student) and returns the pairs."""

MAPPINGS: Registry[MappingStrategy] = Registry("mapping strategy")
MAPPINGS.add("uniform", lambda cfg, nt, ns: uniform_map(nt, ns))
MAPPINGS.add("top", lambda cfg, nt, ns: top_map(nt, ns))
MAPPINGS.add("bottom", lambda cfg, nt, ns: bottom_map(nt, ns))
MAPPINGS.add("many_to_one", lambda cfg, nt, ns: many_to_one_map(nt, ns, cfg.group))
MAPPINGS.add("last", lambda cfg, nt, ns: last_map(nt, ns))
MAPPINGS.add("explicit", lambda cfg, nt, ns: explicit_map(cfg.pairs or []))


def validate_map(pairs: Sequence[LayerPair], n_teacher: int, n_student: int) -> None:
    """Every index in range, no student layer twice, no teacher layer twice within one pair."""
    seen: set[int] = set()
    for p in pairs:
        if not 0 <= p.student <= n_student:
            raise KDistillError(f"mapping names student layer {p.student} but the student has {n_student} "
                                f"layers (valid 0-{n_student})")
        for t in p.teacher:
            if not 0 <= t <= n_teacher:
                raise KDistillError(f"mapping names teacher layer {t} but the teacher has {n_teacher} "
                                    f"layers (valid 0-{n_teacher})")
        if p.student in seen:
            raise KDistillError(f"mapping names student layer {p.student} more than once")
        if len(set(p.teacher)) != len(p.teacher):
            raise KDistillError(f"mapping repeats a teacher layer for student layer {p.student}: "
                                f"{list(p.teacher)}")
        seen.add(p.student)


def embeddings_map() -> list[LayerPair]:
    """The map for "embeddings"-feature losses: student embeddings <- teacher embeddings."""
    return [EMBEDDINGS_PAIR]


def build_map(cfg: MappingConfig, n_teacher: int, n_student: int, *,
              include_embeddings: bool = False) -> list[LayerPair]:
    """The validated map for `cfg`.

    `include_embeddings` prepends (0, (0,)) for embedding losses unless the map already names student 0.
    """
    _depths(n_teacher, n_student)
    pairs = list(MAPPINGS.get(cfg.strategy)(cfg, n_teacher, n_student))
    if include_embeddings and all(p.student != 0 for p in pairs):
        pairs.insert(0, EMBEDDINGS_PAIR)
    validate_map(pairs, n_teacher, n_student)
    return pairs
