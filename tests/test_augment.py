"""TinyBERT augmentation on a tiny masked LM and a tiny word-vector table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_vocab

from kdistill.augment import Augmenter, augment_task, resolve_precision, split_words
from kdistill.config import AugmentConfig, DataConfig, build
from kdistill.data import load_task_data
from kdistill.errors import KDistillError
from kdistill.vectors import load_vectors

VECTORS = """unbelievably 1 0 0
incredibly 0.9 0.1 0
amazingly 0.8 0.2 0.1
sorry 0 0 1
qwerty 0 1 0
"""


def make_tiny_mlm(out: Path, seed: int = 0) -> Path:
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    write_vocab(out / "vocab.txt")
    tok = BertTokenizerFast.from_pretrained(str(out), do_lower_case=True)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, architectures=["BertForMaskedLM"])
    BertForMaskedLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_mlm(tmp_path_factory.mktemp("mlm") / "mlm")


@pytest.fixture(scope="module")
def vectors_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("vec") / "vectors.txt"
    p.write_text("5 3\n" + VECTORS)  # with a word2vec header line, which is skipped
    return p


def augmenter(mlm: Path, vectors: Path, k: int = 3, batch_size: int = 8) -> Augmenter:
    from kdistill.mlm import load_masked_lm
    from kdistill.models import load_tokenizer

    return Augmenter(load_masked_lm(str(mlm)), load_tokenizer(str(mlm)), load_vectors(str(vectors)), k=k,
                     batch_size=batch_size)


def cfg_for(tmp: Path, mlm: Path, vectors: Path, **kw) -> AugmentConfig:
    base = {"data": {"task": "sst2", "max_length": 32}, "mlm": str(mlm), "vectors": str(vectors), "n_a": 3,
            "k": 3, "max_examples": 12, "out": str(tmp / "aug.jsonl"), "device": "cpu"}
    return build(AugmentConfig, {**base, **kw})


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_vectors_nearest_and_text_format(vectors_file: Path) -> None:
    v = load_vectors(str(vectors_file))
    assert v.dim == 3 and len(v.words) == 5
    assert v.nearest(["unbelievably", "nope"], 2) == {"unbelievably": ["incredibly", "amazingly"], "nope": []}


def test_only_single_piece_words_go_to_the_mlm(tiny_mlm: Path, vectors_file: Path, monkeypatch) -> None:
    aug = augmenter(tiny_mlm, vectors_file)
    sent_words = "the film is unbelievably good"
    assert aug.single_piece("film") and not aug.single_piece("unbelievably")
    asked: list[str] = []
    real = aug._mlm_topk

    def spy(jobs):
        asked.extend(word for _, _, word in jobs)
        return real(jobs)

    monkeypatch.setattr(aug, "_mlm_topk", spy)
    [s] = aug.candidates([sent_words])
    assert asked == ["the", "film", "is", "good"]  # every single piece, nothing else
    assert all(aug.single_piece(w) for w in asked)
    by_word = dict(zip(s.words, s.candidates, strict=True))
    assert by_word["unbelievably"] == ["incredibly", "amazingly", "sorry"]  # from the vectors, nearest first
    for w in asked:
        assert len(by_word[w]) == 3 and w not in by_word[w]
        assert all(aug.single_piece(c) and not c.startswith("##") for c in by_word[w])


def test_batched_candidates_equal_the_one_pass_per_word_reference(tiny_mlm: Path, vectors_file: Path) -> None:
    aug = augmenter(tiny_mlm, vectors_file, k=5, batch_size=16)
    texts = ["a charming and funny film .", "the plot is unbelievably thin", "it 's not a bad movie at all"]
    batched = aug.candidates(texts)
    batched_calls = aug.mlm_calls
    aug.mlm_calls = 0
    reference = [aug.reference_candidates(t) for t in texts]
    assert [b.candidates for b in batched] == [r.candidates for r in reference]
    n_words = sum(1 for r in reference for w in r.words if aug.single_piece(w))
    assert aug.mlm_calls == n_words and batched_calls == -(-n_words // 16)


def test_deterministic_with_a_seed_and_p0_changes_nothing(tiny_mlm: Path, vectors_file: Path,
                                                          tmp_path: Path) -> None:
    aug = augmenter(tiny_mlm, vectors_file)
    a = augment_task(cfg_for(tmp_path / "a", tiny_mlm, vectors_file), aug)
    first = (tmp_path / "a" / "aug.jsonl").read_text()
    augment_task(cfg_for(tmp_path / "b", tiny_mlm, vectors_file), aug)
    assert (tmp_path / "b" / "aug.jsonl").read_text() == first
    augment_task(cfg_for(tmp_path / "c", tiny_mlm, vectors_file, seed=7), aug)
    assert (tmp_path / "c" / "aug.jsonl").read_text() != first
    assert a["written"] == 36 and a["examples_per_second"] > 0

    augment_task(cfg_for(tmp_path / "z", tiny_mlm, vectors_file, p_t=0.0), aug)
    data = load_task_data(DataConfig(task="sst2", max_length=32))
    tok = aug.tok
    out = rows(tmp_path / "z" / "aug.jsonl")
    assert len(out) == 36
    for r in out:
        original = data.splits["train"][r["source"]]
        assert r["text"] == " ".join(split_words(tok, original["text_a"]))
        assert r["label_id"] == original["label"]
    changed = [r for r in rows(tmp_path / "a" / "aug.jsonl")
               if r["text"] != " ".join(split_words(tok, data.splits["train"][r["source"]]["text_a"]))]
    assert len(changed) > 20  # p_t = 0.4: nearly every copy changes some word


def test_pairs_keep_alignment(tiny_mlm: Path, vectors_file: Path, tmp_path: Path) -> None:
    aug = augmenter(tiny_mlm, vectors_file)
    data = load_task_data(DataConfig(task="mrpc", max_length=32)).splits["train"]
    for pair in ("first", "both"):
        cfg = cfg_for(tmp_path / pair, tiny_mlm, vectors_file, data={"task": "mrpc", "max_length": 32},
                      max_examples=6, n_a=2, pair=pair)
        augment_task(cfg, aug)
        out = rows(tmp_path / pair / "aug.jsonl")
        assert [r["source"] for r in out] == [i for i in range(6) for _ in range(2)]
        for r in out:
            src = data[r["source"]]
            assert r["label_id"] == src["label"]
            if pair == "first":
                assert r["text_pair"] == src["text_b"]  # the second sentence travels unchanged with its pair
            else:
                assert len(r["text_pair"].split()) == len(split_words(aug.tok, src["text_b"]))
            assert len(r["text"].split()) == len(split_words(aug.tok, src["text_a"]))


def test_augment_file_extends_only_the_training_split(tiny_mlm: Path, vectors_file: Path, tmp_path: Path) -> None:
    aug = augmenter(tiny_mlm, vectors_file)
    augment_task(cfg_for(tmp_path, tiny_mlm, vectors_file), aug)
    plain = load_task_data(DataConfig(task="sst2", max_length=32))
    extended = load_task_data(DataConfig(task="sst2", max_length=32, augment_file=str(tmp_path / "aug.jsonl")))
    assert len(extended.splits["train"]) == len(plain.splits["train"]) + 36
    assert extended.splits["validation"]["text_a"] == plain.splits["validation"]["text_a"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "x", "label": "neutral"}) + "\n")
    with pytest.raises(KDistillError, match="line 1: label 'neutral' is not one of"):
        load_task_data(DataConfig(task="sst2", augment_file=str(bad)))


def test_unknown_vectors_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KDistillError, match="word vectors not found"):
        load_vectors(str(tmp_path / "none.txt"))


def test_bf16_keeps_the_word_slots_and_most_candidates(tiny_mlm: Path, vectors_file: Path) -> None:
    """bf16 autocast only reorders near-ties: the same words get candidates, and most candidates agree."""
    texts = ["a charming and funny film .", "the plot is unbelievably thin", "it 's not a bad movie at all"]
    exact = augmenter(tiny_mlm, vectors_file, k=5).candidates(texts)
    fast = augmenter(tiny_mlm, vectors_file, k=5)
    fast.bf16 = True
    approx = fast.candidates(texts)
    total = agree = 0
    for e, a in zip(exact, approx, strict=True):
        assert e.words == a.words
        for x, y in zip(e.candidates, a.candidates, strict=True):
            assert bool(x) == bool(y) and len(x) == len(y)
            total, agree = total + len(x), agree + len(set(x) & set(y))
    assert total > 0 and agree / total > 0.5, agree / total


def test_precision_is_a_validated_config_field(tmp_path: Path, tiny_mlm: Path, vectors_file: Path) -> None:
    assert cfg_for(tmp_path, tiny_mlm, vectors_file, precision="bf16").precision == "bf16"
    with pytest.raises(Exception, match="precision"):
        cfg_for(tmp_path, tiny_mlm, vectors_file, precision="fp8")


def test_auto_precision_picks_bf16_only_with_native_support(monkeypatch) -> None:
    """`precision: auto` (the default) must not turn on emulated bf16, which is slower than fp32."""
    assert AugmentConfig().precision == "auto"
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda") == "fp32"


@pytest.mark.parametrize(("task", "message"), [
    ("goemotions", "keeps one label per example: multi-label"),
    ("conll2003", "the tags would no longer line up"),
    ("squad", "the answer spans would no longer line up"),
])
def test_augmentation_is_refused_where_labels_cannot_follow_the_words(tmp_path: Path, task: str,
                                                                     message: str) -> None:
    from kdistill.tasks import get_task
    from kdistill.tasks.shipped import TASKS

    aug = tmp_path / "aug.jsonl"
    aug.write_text('{"text": "a replaced sentence", "text_pair": "a context", "label": "joy"}\n')
    with pytest.raises(KDistillError, match=message):
        load_task_data(DataConfig(task=task, max_train_examples=8, max_eval_examples=8, augment_file=str(aug)))
    kind = get_task(TASKS.get(task).task_type)  # the hooks themselves refuse too, not only the file reader
    with pytest.raises(KDistillError, match=message):
        kind.augment_fields(1, ["a", "b"])
    with pytest.raises(KDistillError, match=message):
        kind.augment_label({"text": "x", "label": "a"}, ["a", "b"], "row 1")
