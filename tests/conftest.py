"""Shared fixtures: a tiny BERT teacher (width 32) with a real WordPiece vocabulary built from SST-2.

Nothing is downloaded: the vocabulary comes from the shipped SST-2 file, the model is random.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# one thread per pytest-xdist worker (scripts/test.sh runs two): tiny models gain nothing from a second thread,
# and two workers with two threads each would spin against each other on a 2-core machine
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"  # and in the runs tests start as subprocesses: kill/resume tests compare
    torch.set_num_threads(1)  # their weights bit for bit with an in-process run, and thread counts change float sums
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

DATA = Path(__file__).resolve().parents[1] / "src" / "kdistill" / "datasets"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(path: Path, n_words: int = 600) -> Path:
    counts: Counter[str] = Counter()
    with open(DATA / "sst2" / "train.tsv", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t")
        next(rows)
        for row in rows:
            counts.update(row[0].lower().split())
    words = [w for w, _ in counts.most_common(n_words) if w not in SPECIALS]
    letters = [c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    pieces = [f"##{c}" for c in letters]
    vocab = SPECIALS + letters + pieces + [w for w in words if w not in letters]
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


def make_tiny_bert(out: Path, *, num_layers: int = 4, hidden: int = 32, heads: int = 2,
                   num_labels: int = 2, seed: int = 0, problem_type: str | None = None,
                   label_names: list[str] | None = None) -> Path:
    """Save a tiny BertForSequenceClassification + tokenizer as an ordinary HF folder.

    `problem_type` ("regression", "multi_label_classification") makes a head of that task type.
    """
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    write_vocab(out / "vocab.txt")
    # transformers 5 ignores `vocab_file=` in the constructor; loading the folder reads it
    tok = BertTokenizerFast.from_pretrained(str(out), do_lower_case=True)
    assert len(tok) > 600, len(tok)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=num_layers,
                     num_attention_heads=heads, intermediate_size=hidden * 2, max_position_embeddings=128,
                     num_labels=num_labels, architectures=["BertForSequenceClassification"],
                     problem_type=problem_type,
                     **({"id2label": dict(enumerate(label_names))} if label_names else {}))
    model = BertForSequenceClassification(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "teacher")


@pytest.fixture(scope="session")
def regression_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny regression model (one output, problem_type regression): the wrong teacher for class data."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-reg") / "teacher", num_labels=1, problem_type="regression")


@pytest.fixture
def tiny_data() -> dict:
    """A small slice of shipped SST-2: fast, real text."""
    return {"task": "sst2", "max_train_examples": 96, "max_eval_examples": 48, "max_length": 32}


@pytest.fixture
def fast_train() -> dict:
    return {"epochs": 1, "batch_size": 16, "eval_batch_size": 32, "lr": 1e-3, "progress": False,
            "save_steps": 1000, "device": "cpu"}


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A run with `train.threads` sets torch's process-wide thread count; later tests must not inherit it
    (results compared across processes depend on the summation order that the thread count sets)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _run_in_a_scratch_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own empty folder: default outputs (runs/student, bench.json, report/) must neither
    land in the checkout nor meet the runs a user already has there (a test once resumed a user's real run)."""
    monkeypatch.chdir(tmp_path)
