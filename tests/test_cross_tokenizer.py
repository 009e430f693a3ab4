"""A student with its own tokenizer: the teacher reads each training text through its own tokenizer and is matched
to the student's batch by example; cached and live runs agree; token-level losses are refused at set-up."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import SPECIALS, write_vocab
from safetensors.torch import load_file

from kdistill import api
from kdistill.config import DistillConfig, LossConfig, MappingConfig, build
from kdistill.data import load_task_data
from kdistill.distill.features import FeatureRequest, forward_features
from kdistill.distill.objective import Objective
from kdistill.errors import KDistillError
from kdistill.models import load_classifier, load_tokenizer, probe, same_vocabulary
from kdistill.teachers import CachedTeacher, OtherTokenizerTeacher, TeacherPlan
from kdistill.tokenized import make_loader, tokenize_splits, tokenizer_hash

KD = [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]
TRAIN = {"epochs": 2, "lr": 2e-3}


def make_bert(out: Path, *, n_words: int, shuffle: bool, hidden: int, layers: int, init_range: float,
              seed: int) -> Path:
    """A tiny BertForSequenceClassification (2 classes) + WordPiece tokenizer folder. `shuffle` numbers every
    non-special token otherwise; a large `init_range` makes a random model's logits depend on its input (at
    BERT's 0.02 they are nearly the same for every text, and a misplaced example would go unnoticed)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    lines = write_vocab(out / "vocab.txt", n_words=n_words).read_text(encoding="utf-8").split()
    head, rest = lines[:len(SPECIALS)], lines[len(SPECIALS):]
    if shuffle:
        random.Random(seed).shuffle(rest)
    (out / "vocab.txt").write_text("\n".join(head + rest) + "\n", encoding="utf-8")
    tok = BertTokenizerFast.from_pretrained(str(out), do_lower_case=True)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=128, num_labels=2,
                     initializer_range=init_range, architectures=["BertForSequenceClassification"])
    BertForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 layers x 32, the conftest vocabulary (600 words)."""
    return make_bert(tmp_path_factory.mktemp("xtok") / "teacher", n_words=600, shuffle=False, hidden=32, layers=4,
                     init_range=0.5, seed=0)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 layers x 16 with another vocabulary: 250 words instead of 600, every non-special token at another id."""
    return make_bert(tmp_path_factory.mktemp("xtok") / "student", n_words=250, shuffle=True, hidden=16, layers=2,
                     init_range=0.2, seed=3)


def _cfg(teacher: Path, student: Path, out: Path, tiny_data: dict, fast_train: dict, losses: list,
         **top) -> DistillConfig:
    return build(DistillConfig, {"teacher": str(teacher), "student": {"init": "path", "path": str(student)},
                                 "data": tiny_data, "train": {**fast_train, **TRAIN}, "losses": losses,
                                 "out": str(out), **top})


@pytest.fixture(scope="module")
def live_run(teacher_dir: Path, student_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One live cross-tokenizer run (kl + ce), shared by the tests that inspect or compare against it."""
    tiny_data = {"task": "sst2", "max_train_examples": 96, "max_eval_examples": 48, "max_length": 32}
    fast_train = {"epochs": 1, "batch_size": 16, "eval_batch_size": 32, "lr": 1e-3, "progress": False,
                  "save_steps": 1000, "device": "cpu"}
    out = tmp_path_factory.mktemp("xtok-live") / "live"
    summary = api.distill(_cfg(teacher_dir, student_dir, out, tiny_data, fast_train, KD))
    return out, summary


def _kl_to_teacher(teacher: torch.nn.Module, t_tok, student: torch.nn.Module, s_tok, texts: list[str],
                   temperature: float) -> torch.Tensor:
    """Hinton's KD loss computed by hand: each side tokenises the raw texts itself; KL(p_t || p_s) at T, mean over
    examples, times T^2 (as `kdistill.distill.losses.kl_div` defines it)."""
    t_in = t_tok(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")
    s_in = s_tok(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")
    with torch.no_grad():
        t_logits = teacher.eval()(**t_in).logits
        s_logits = student.eval()(**s_in).logits
    p_t = F.softmax(t_logits / temperature, -1)
    log_p_s = F.log_softmax(s_logits / temperature, -1)
    return (p_t * (p_t.log() - log_p_s)).sum(-1).mean() * temperature**2


def test_one_batch_loss_equals_a_hand_computed_kl(teacher_dir: Path, student_dir: Path, tiny_data: dict) -> None:
    teacher, t_tok = load_classifier(str(teacher_dir)), load_tokenizer(str(teacher_dir))
    student, s_tok = load_classifier(str(student_dir)), load_tokenizer(str(student_dir))
    assert not same_vocabulary(t_tok, s_tok)
    data = load_task_data(build(DistillConfig, {"data": tiny_data}).data)
    raw = data.splits["train"]
    s_train = TeacherPlan.with_idx(tokenize_splits(data, s_tok, 32)["train"])
    t_train = tokenize_splits(data, t_tok, 32)["train"]
    batch = next(iter(make_loader(s_train, s_tok, 8, shuffle=True, seed=5)))
    idx = batch["idx"].tolist()
    assert idx != list(range(8))  # shuffled: the teacher must find its rows by idx, not by position
    texts = [raw[i]["text_a"] for i in idx]
    assert any(t_train[i]["input_ids"] != s_train[i]["input_ids"] for i in idx)  # the two sides see other tokens

    objective = Objective([LossConfig(name="kl", temperature=2.0)], MappingConfig(), student=probe(student),
                          teacher=probe(teacher), same_tokens=False)
    source = OtherTokenizerTeacher(teacher, t_tok, t_train, objective.teacher_request)
    student.eval()
    with torch.no_grad():
        t_feats = source.signals(batch)
        s_feats = forward_features(student, batch, objective.student_request)
        loss = objective(s_feats, t_feats, batch["labels"]).total
    expected = _kl_to_teacher(teacher, t_tok, student, s_tok, texts, 2.0)
    assert expected > 1e-4  # two random models disagree, so the comparison below is not 0 == 0
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-6)


def test_a_cross_tokenizer_run_trains_and_keeps_the_students_tokenizer(teacher_dir: Path, student_dir: Path,
                                                                        tiny_data: dict,
                                                                        live_run: tuple[Path, dict]) -> None:
    out, summary = live_run
    assert summary["steps"] == 12 and "test" in summary and "validation" in summary
    assert load_tokenizer(str(out)).get_vocab() == load_tokenizer(str(student_dir)).get_vocab()
    trained = load_classifier(str(out))
    assert trained.config.vocab_size == load_classifier(str(student_dir)).config.vocab_size
    teacher, t_tok = load_classifier(str(teacher_dir)), load_tokenizer(str(teacher_dir))
    s_tok = load_tokenizer(str(student_dir))
    data = load_task_data(build(DistillConfig, {"data": tiny_data}).data)
    texts = list(data.splits["train"]["text_a"])
    before = _kl_to_teacher(teacher, t_tok, load_classifier(str(student_dir)), s_tok, texts, 2.0)
    after = _kl_to_teacher(teacher, t_tok, trained, s_tok, texts, 2.0)
    assert after < 0.8 * before, (before, after)  # the student moved toward the teacher (0.65 -> 0.42 here)


def test_cached_and_live_cross_tokenizer_runs_give_the_same_weights(teacher_dir: Path, student_dir: Path,
                                                                     tmp_path: Path, tiny_data: dict, fast_train: dict,
                                                                     live_run: tuple[Path, dict]) -> None:
    live_out, _ = live_run
    summary = api.distill(_cfg(teacher_dir, student_dir, tmp_path / "cached", tiny_data, fast_train, KD,
                               teacher_cache=True))
    info = summary["teacher_cache"]
    assert info["built"]
    manifest = json.loads((Path(info["folder"]) / "manifest.json").read_text())
    # the cache holds the teacher's reading of the texts: keyed by the teacher's tokenizer, not the student's
    assert manifest["parts"]["tokenizer"] == tokenizer_hash(load_tokenizer(str(teacher_dir)))
    wa, wb = load_file(str(live_out / "model.safetensors")), load_file(str(tmp_path / "cached" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    # Attention key biases get a gradient that is exactly 0 (softmax ignores a constant added to every key's score
    # for a query); Adam scales its float noise (the teacher's logits differ by ~1e-7 with the padding) up to
    # lr-sized steps. They are compared through the outputs below instead, which they do not change.
    for k in wa:
        if not k.endswith("attention.self.key.bias"):
            torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6, msg=k)
    s_tok = load_tokenizer(str(student_dir))
    data = load_task_data(build(DistillConfig, {"data": tiny_data}).data)
    texts = s_tok(list(data.splits["validation"]["text_a"]), truncation=True, max_length=32, padding=True,
                  return_tensors="pt")
    with torch.no_grad():
        live, cached = (load_classifier(str(p))(**texts).logits for p in (live_out, tmp_path / "cached"))
    torch.testing.assert_close(live, cached, rtol=0, atol=1e-6)


def test_token_level_losses_across_tokenizers_are_refused_at_set_up(teacher_dir: Path, student_dir: Path,
                                                                    tmp_path: Path, tiny_data: dict,
                                                                    fast_train: dict) -> None:
    cfg = _cfg(teacher_dir, student_dir, tmp_path / "h", tiny_data, fast_train, [*KD, {"name": "hidden_mse"}])
    with pytest.raises(KDistillError) as err:
        api.distill(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "'hidden_mse'" in msg
    assert msg.endswith("per-example losses: kl, soft_targets, soft_ce, logit_mse, ce, cls_cosine, mean_pooled_cosine, "
                        "mean_pooled_mse"), msg
    assert not (tmp_path / "h" / "kdistill.yaml").exists()  # refused before anything was recorded
    several = _cfg(teacher_dir, student_dir, tmp_path / "m", tiny_data, fast_train, KD,
                   extra_teachers=[str(teacher_dir)])
    with pytest.raises(KDistillError, match="extra_teachers"):
        api.distill(several)
    # every extra teacher reads the same batch as the first, so it must share its vocabulary
    other_extra = build(DistillConfig, {"teacher": str(teacher_dir), "student": {"num_layers": 1}, "data": tiny_data,
                                        "train": fast_train, "losses": KD, "out": str(tmp_path / "x"),
                                        "extra_teachers": [str(student_dir)]})
    with pytest.raises(KDistillError, match="another tokenizer than teacher"):
        api.distill(other_extra)


def test_cls_cosine_across_tokenizers_compares_each_sides_own_cls(teacher_dir: Path, student_dir: Path,
                                                                  tiny_data: dict, tmp_path: Path) -> None:
    """The per-example feature loss: the teacher's [CLS] state of its own tokens against the student's, projected."""
    teacher, t_tok = load_classifier(str(teacher_dir)), load_tokenizer(str(teacher_dir))
    student, s_tok = load_classifier(str(student_dir)), load_tokenizer(str(student_dir))
    data = load_task_data(build(DistillConfig, {"data": tiny_data}).data)
    s_train = TeacherPlan.with_idx(tokenize_splits(data, s_tok, 32)["train"])
    t_train = tokenize_splits(data, t_tok, 32)["train"]
    batch = next(iter(make_loader(s_train, s_tok, 8, shuffle=True, seed=1)))
    objective = Objective([LossConfig(name="cls_cosine", mapping=MappingConfig(strategy="last"))], MappingConfig(),
                          student=probe(student), teacher=probe(teacher), same_tokens=False)
    assert objective.teacher_request == FeatureRequest(hidden=frozenset({4}))
    student.eval()
    with torch.no_grad():
        t_feats = OtherTokenizerTeacher(teacher, t_tok, t_train, objective.teacher_request).signals(batch)
        s_feats = forward_features(student, batch, objective.student_request)
        loss = objective(s_feats, t_feats, batch["labels"]).total
        texts = [data.splits["train"][i]["text_a"] for i in batch["idx"].tolist()]
        t_cls = teacher(**t_tok(texts, truncation=True, max_length=32, padding=True, return_tensors="pt"),
                        output_hidden_states=True).hidden_states[4][:, 0]
        s_cls = student(**s_tok(texts, truncation=True, max_length=32, padding=True, return_tensors="pt"),
                        output_hidden_states=True).hidden_states[2][:, 0]
        expected = (1 - F.cosine_similarity(objective.projections["cls_cosine"](s_cls), t_cls, dim=-1)).mean()
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-6)
    # cached, the same [CLS] states come from a cache built on the teacher's tokens (float32 here)
    from kdistill.cache import build_cache, cache_spec

    spec = cache_spec(teacher, t_tok, data.splits["train"], t_train, 32, objective.teacher_request, "float32")
    build_cache(tmp_path / spec.fingerprint, spec, teacher, t_train, t_tok, progress=False, log=lambda _: None)
    cached = CachedTeacher(tmp_path / spec.fingerprint, objective.teacher_request, per_example=True).signals(batch)
    # the cache ran the teacher on batches padded to other lengths: float noise of ~1e-5 (thread-count dependent),
    # where a row served for another example would differ by O(1)
    torch.testing.assert_close(cached.hidden[4], t_feats.hidden[4], rtol=0, atol=5e-5)
    torch.testing.assert_close(cached.logits, t_feats.logits, rtol=0, atol=5e-5)
