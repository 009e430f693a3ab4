"""Mean-pooled hidden-state losses (`mean_pooled_cosine`, `mean_pooled_mse`): each side averaged over its own real
tokens, so they work for a student with another tokenizer (live and cached) and for an ordinary teacher."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_cross_tokenizer import make_bert

from kdistill import api
from kdistill.config import DistillConfig, LossConfig, MappingConfig, build
from kdistill.data import load_task_data
from kdistill.distill.features import FeatureRequest, forward_features
from kdistill.distill.losses import LOSSES, cls_cosine, get_loss
from kdistill.distill.objective import Objective
from kdistill.distill.pooled_losses import mean_over_tokens, mean_pooled_cosine, mean_pooled_mse
from kdistill.errors import KDistillError
from kdistill.models import load_classifier, load_tokenizer, probe
from kdistill.teachers import CachedTeacher, OtherTokenizerTeacher, TeacherPlan
from kdistill.tokenized import make_loader, tokenize_splits

nan, BIG = float("nan"), 1e30
KD = [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]
DATA = {"task": "sst2", "max_train_examples": 32, "max_eval_examples": 16, "max_length": 32}
TRAIN = {"epochs": 1, "batch_size": 16, "eval_batch_size": 16, "lr": 2e-3, "progress": False, "save_steps": 1000,
         "device": "cpu"}


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As in test_cross_tokenizer: 4 layers x 32, the conftest vocabulary."""
    return make_bert(tmp_path_factory.mktemp("pooled") / "teacher", n_words=600, shuffle=False, hidden=32, layers=4,
                     init_range=0.5, seed=0)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 layers x 16 with another vocabulary (250 words, every non-special token at another id)."""
    return make_bert(tmp_path_factory.mktemp("pooled") / "student", n_words=250, shuffle=True, hidden=16, layers=2,
                     init_range=0.2, seed=3)


# ------------------------------------------------------------------------------------------ the losses by hand


def _hand_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student (2, 3, 2) and teacher (2, 4, 2) states with other lengths and padding on both sides (right padding,
    and a left-padded teacher row); padded positions hold NaN or huge values, which must not count."""
    s = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [nan, nan]],
                      [[0.0, 2.0], [BIG, -BIG], [nan, 1.0]]])
    s_mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    t = torch.tensor([[[2.0, 2.0], [4.0, 0.0], [0.0, 4.0], [BIG, nan]],
                      [[nan, nan], [-1.0, 3.0], [1.0, 1.0], [3.0, -1.0]]])
    t_mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
    return s, s_mask, t, t_mask


def test_each_side_is_averaged_over_its_own_real_tokens() -> None:
    s, s_mask, t, t_mask = _hand_inputs()
    # means by hand: student rows (2, 1) and (0, 2); teacher rows (2, 2) and (1, 1)
    s_means, t_means = [(2.0, 1.0), (0.0, 2.0)], [(2.0, 2.0), (1.0, 1.0)]
    pairs = list(zip(s_means, t_means, strict=True))
    cos = [(a[0] * b[0] + a[1] * b[1]) / (math.hypot(*a) * math.hypot(*b)) for a, b in pairs]
    sq = [((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) / 2 for a, b in pairs]
    assert cos[0] != cos[1]
    torch.testing.assert_close(mean_pooled_cosine(s, t, mask=s_mask, t_mask=t_mask),
                               torch.tensor(sum(1 - c for c in cos) / 2))
    torch.testing.assert_close(mean_pooled_cosine(s, t, mask=s_mask, t_mask=t_mask, form="neg-cos"),
                               torch.tensor(-sum(cos) / 2))
    torch.testing.assert_close(mean_pooled_mse(s, t, mask=s_mask, t_mask=t_mask), torch.tensor(sum(sq) / 2))
    # the teacher's mask is its own: without it the student's mask is tried on the teacher, whose length differs
    with pytest.raises(KDistillError, match=r"mean_pooled_mse \(teacher\): mask shape \(2, 3\)"):
        mean_pooled_mse(s, t, mask=s_mask)


def test_the_teachers_mask_decides_the_teachers_mean() -> None:
    """Same lengths on both sides, other masks: the result follows t_mask, not the student's mask."""
    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    t = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-4.0, 2.0]]])
    s_mask, t_mask = torch.tensor([[1, 1, 0]]), torch.tensor([[1, 1, 1]])
    # student mean (0.5, 0.5); teacher mean over 3 tokens (-1, 1): orthogonal, so 1 - cos = 1 and MSE = 1.25
    torch.testing.assert_close(mean_pooled_cosine(s, t, mask=s_mask, t_mask=t_mask), torch.tensor(1.0))
    torch.testing.assert_close(mean_pooled_mse(s, t, mask=s_mask, t_mask=t_mask), torch.tensor(1.25))
    # with the student's mask on both sides the means would be equal and both losses 0
    torch.testing.assert_close(mean_pooled_cosine(s, t, mask=s_mask), torch.tensor(0.0))
    torch.testing.assert_close(mean_pooled_mse(s, t, mask=s_mask), torch.tensor(0.0))


def test_padding_gets_no_gradient_and_empty_rows_count_for_nothing() -> None:
    s, s_mask, t, t_mask = _hand_inputs()
    for fn in (mean_pooled_cosine, mean_pooled_mse):
        x = s.clone().requires_grad_(True)
        fn(x, t, mask=s_mask, t_mask=t_mask).backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        assert x.grad[s_mask == 0].abs().sum() == 0 and x.grad[s_mask == 1].abs().sum() > 0
    # a row with no real token on one side is left out; a batch of only such rows gives 0, not NaN
    s_none = torch.tensor([[1, 1, 0], [0, 0, 0]])
    # row 0 alone: student mean (2, 1), teacher mean (2, 2) -> (0 + 1) / 2; row 1 (no student token) would add 1.25
    torch.testing.assert_close(mean_pooled_mse(s, t, mask=s_none, t_mask=t_mask), torch.tensor(0.5))
    assert mean_pooled_cosine(s, t, mask=torch.zeros(2, 3), t_mask=t_mask).item() == 0.0
    means, rows = mean_over_tokens(s, s_none)
    assert rows.tolist() == [True, False] and means[1].tolist() == [0.0, 0.0]


def test_registered_as_per_example_projectable_layer_losses() -> None:
    for name in ("mean_pooled_cosine", "mean_pooled_mse"):
        spec = get_loss(name)
        assert (spec.feature, spec.per_layer, spec.projectable, spec.token_aligned) == ("hidden", True, True, False)
        assert spec.accepts("mask") and spec.accepts("t_mask")
    with pytest.raises(KDistillError, match="student width 3 != teacher width 2"):
        mean_pooled_cosine(torch.zeros(1, 2, 3), torch.zeros(1, 2, 2))


def test_cls_cosine_takes_each_sides_first_real_token() -> None:
    s, s_mask, t, t_mask = _hand_inputs()
    # student [CLS] rows (1, 0) and (0, 2); teacher's (2, 2) and, left-padded, (-1, 3) at position 1
    expected = (1 - 1 / math.sqrt(2) + 1 - 3 / math.sqrt(10)) / 2
    torch.testing.assert_close(cls_cosine(s, t, mask=s_mask, t_mask=t_mask), torch.tensor(expected))


def test_a_config_cannot_set_the_masks(teacher_dir: Path, student_dir: Path) -> None:
    s, t = probe(load_classifier(str(student_dir))), probe(load_classifier(str(teacher_dir)))
    with pytest.raises(KDistillError, match=r"no parameter\(s\) \['t_mask'\] \(valid: \[\]\)"):
        Objective([LossConfig(name="mean_pooled_mse", params={"t_mask": 1})], MappingConfig(), student=s, teacher=t,
                  same_tokens=False)


# --------------------------------------------------------------------------------- across tokenizers, one batch


def _pooled_by_hand(model: torch.nn.Module, tok, texts: list[str], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sentence-Transformers' mean pooling of `layer` on the model's own tokenization, and its [CLS] state."""
    enc = tok(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")
    states = model.eval()(**enc, output_hidden_states=True).hidden_states[layer]
    m = enc["attention_mask"].unsqueeze(-1).float()
    return (states * m).sum(1) / m.sum(1).clamp(min=1e-9), states[:, 0]


def test_across_tokenizers_each_side_pools_its_own_tokens_live_and_cached(teacher_dir: Path, student_dir: Path,
                                                                         tmp_path: Path) -> None:
    teacher, t_tok = load_classifier(str(teacher_dir)), load_tokenizer(str(teacher_dir))
    student, s_tok = load_classifier(str(student_dir)), load_tokenizer(str(student_dir))
    data = load_task_data(build(DistillConfig, {"data": DATA}).data)
    s_train = TeacherPlan.with_idx(tokenize_splits(data, s_tok, 32)["train"])
    t_train = tokenize_splits(data, t_tok, 32)["train"]
    batch = next(iter(make_loader(s_train, s_tok, 8, shuffle=True, seed=2)))
    last = MappingConfig(strategy="last")
    losses = [LossConfig(name=n, mapping=last) for n in ("mean_pooled_cosine", "mean_pooled_mse", "cls_cosine")]
    objective = Objective(losses, MappingConfig(), student=probe(student), teacher=probe(teacher), same_tokens=False)
    assert objective.teacher_request == FeatureRequest(hidden=frozenset({4}))  # one layer serves all three
    student.eval()
    with torch.no_grad():
        live = OtherTokenizerTeacher(teacher, t_tok, t_train, objective.teacher_request).signals(batch)
        s_feats = forward_features(student, batch, objective.student_request)
        out = objective(s_feats, live, batch["labels"])
        texts = [data.splits["train"][i]["text_a"] for i in batch["idx"].tolist()]
        t_mean, t_cls = _pooled_by_hand(teacher, t_tok, texts, 4)
        s_mean, s_cls = _pooled_by_hand(student, s_tok, texts, 2)
        proj = objective.projections
        cos = (1 - F.cosine_similarity(proj["mean_pooled_cosine"](s_mean), t_mean, dim=-1)).mean()
        mse = F.mse_loss(proj["mean_pooled_mse"](s_mean), t_mean)
        cls = (1 - F.cosine_similarity(proj["cls_cosine"](s_cls), t_cls, dim=-1)).mean()
        # the teacher's tokens are padded elsewhere than the student's: its mask is not the student's
        assert live.mask.shape != batch["attention_mask"].shape or not torch.equal(live.mask, batch["attention_mask"])
        # pooling the teacher with a mask of the student's real-token counts would give another mean
        wrong = (live.hidden[4] * (torch.arange(live.mask.shape[1]) < batch["attention_mask"].sum(1)[:, None])
                 .unsqueeze(-1)).sum(1) / batch["attention_mask"].sum(1, keepdim=True)
        assert (wrong - t_mean).abs().max() > 1e-2
    for key, expected in (("mean_pooled_cosine", cos), ("mean_pooled_mse", mse), ("cls_cosine", cls)):
        assert expected > 1e-3, key  # two random models disagree: not 0 == 0
        torch.testing.assert_close(out.terms[key], expected, rtol=0, atol=1e-5, msg=key)

    # cached: the same per-example features come from a cache of the teacher's tokens (float32 here: exact)
    from kdistill.cache import build_cache, cache_spec

    spec = cache_spec(teacher, t_tok, data.splits["train"], t_train, 32, objective.teacher_request, "float32")
    build_cache(tmp_path / spec.fingerprint, spec, teacher, t_train, t_tok, progress=False, log=lambda _: None)
    cached = CachedTeacher(tmp_path / spec.fingerprint, objective.teacher_request, per_example=True).signals(batch)
    assert torch.equal(cached.mask, live.mask)
    torch.testing.assert_close(cached.hidden[4], live.hidden[4], rtol=0, atol=1e-5)
    with torch.no_grad():
        again = objective(s_feats, cached, batch["labels"])
    for key in out.terms:
        torch.testing.assert_close(again.terms[key], out.terms[key], rtol=0, atol=1e-6, msg=key)


def test_token_level_losses_across_tokenizers_name_the_mean_pooled_ones(teacher_dir: Path,
                                                                         student_dir: Path) -> None:
    s, t = probe(load_classifier(str(student_dir))), probe(load_classifier(str(teacher_dir)))
    with pytest.raises(KDistillError) as err:
        Objective([LossConfig(name="hidden_mse")], MappingConfig(), student=s, teacher=t, same_tokens=False)
    msg = str(err.value)
    assert "\n" not in msg and "'hidden_mse'" in msg
    works = msg.split("per-example losses: ")[1].split(", ")
    assert {"cls_cosine", "mean_pooled_cosine", "mean_pooled_mse", "kl"} <= set(works)
    assert works == [n for n in LOSSES if not LOSSES.get(n).token_aligned and n in works]  # registry order


# ------------------------------------------------------------------------------------------------ whole runs


def _cfg(teacher: Path, student: dict, out: Path, losses: list, **top) -> DistillConfig:
    return build(DistillConfig, {"teacher": str(teacher), "student": student, "data": DATA, "train": TRAIN,
                                 "losses": losses, "out": str(out), **top})


def _layer_losses(summary: dict, term: str) -> list[float]:
    return [v for rec in summary["history"] for v in rec["layer_losses"][term].values()]


@pytest.mark.parametrize("same_tokens", [False, True], ids=["other-tokenizer", "same-tokenizer"])
def test_distill_with_mean_pooled_loss_live_and_cached_agree(same_tokens: bool, teacher_dir: Path,
                                                             student_dir: Path, tmp_path: Path) -> None:
    """`api.distill` with the mean-pooled loss, live and from the teacher cache: the same per-layer loss values.

    Another tokenizer: the pretrained student of its own vocabulary. Same tokenizer: a 1-layer student cut from the
    teacher, where teacher and student pool over the same (student's) mask.
    """
    student = {"init": "teacher_layers", "num_layers": 1} if same_tokens else {"init": "path", "path": str(student_dir)}
    losses = [*KD, {"name": "mean_pooled_cosine", "weight": 1.0, "mapping": {"strategy": "last"}}]
    live = api.distill(_cfg(teacher_dir, student, tmp_path / "live", losses))
    cached = api.distill(_cfg(teacher_dir, student, tmp_path / "cached", losses, teacher_cache=True,
                              teacher_cache_dtype="float32"))
    assert cached["teacher_cache"]["built"] and live["steps"] == cached["steps"] == 2
    a, b = _layer_losses(live, "mean_pooled_cosine"), _layer_losses(cached, "mean_pooled_cosine")
    assert len(a) == 1 and 1e-4 < a[0] < 2  # a real, finite disagreement between the two models
    assert b == pytest.approx(a, abs=1e-5)
    assert "mean_pooled_cosine" in live["method"]
