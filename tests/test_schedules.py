"""Layer schedules driven by fake per-epoch losses: exactly when each layer activates, and end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from kdistill import api
from kdistill.config import DistillConfig, FinetuneConfig, ScheduleConfig, build
from kdistill.distill.schedules import AllLayers, Progressive, Stacked, build_schedule
from kdistill.errors import KDistillError
from kdistill.models import load_classifier


def _drive(schedule, cos_per_epoch: list[dict[int, float]]) -> list[tuple[frozenset | None, bool]]:
    """Active layers and prediction flag during each epoch, feeding the fake losses after it."""
    seen = []
    for epoch, losses in enumerate(cos_per_epoch):
        a = schedule.active()
        seen.append((a.layers, a.prediction))
        schedule.observe(epoch, {"cls_cosine": losses})
    return seen


HIGH = {1: 0.9, 2: 0.9, 3: 0.9}


def test_pid_epoch_limit_path() -> None:
    s = Progressive([3, 1, 2], ScheduleConfig(name="pid", epochs_per_layer=2))
    seen = _drive(s, [HIGH] * 8)
    layers = [x[0] for x in seen]
    assert layers == [{1}, {1}, {2}, {2}, {3}, {3}, frozenset(), frozenset()]
    # prediction (top): from the top layer's stage on
    assert [x[1] for x in seen] == [False, False, False, False, True, True, True, True]


def test_sid_threshold_path_advances_early() -> None:
    s = Stacked([1, 2, 3], ScheduleConfig(name="sid", epochs_per_layer=3, threshold=0.1, prediction="always"))
    losses = [{1: 0.5}, {1: 0.05}, {1: 0.04, 2: 0.3}, {1: 0.03, 2: 0.09}, {2: 0.2, 3: 0.5}, {3: 0.4},
              {3: 0.3}, HIGH]
    seen = _drive(s, losses)
    assert [x[0] for x in seen] == [{1}, {1}, {1, 2}, {1, 2}, {1, 2, 3}, {1, 2, 3}, {1, 2, 3}, {1, 2, 3}]
    assert all(pred for _, pred in seen)  # soft labels always
    assert s.describe() == "final"


def test_threshold_only_looks_at_the_current_layer() -> None:
    s = Progressive([1, 2], ScheduleConfig(name="pid", epochs_per_layer=5, threshold=0.1))
    events = s.observe(0, {"cls_cosine": {1: 0.5, 2: 0.01}})  # layer 2 already low: irrelevant now
    assert events == [] and s.active().layers == {1}
    events = s.observe(1, {"cls_cosine": {1: 0.05}})
    assert events == ["epoch 2: layer 1 done (cls_cosine 0.0500 < 0.1); layer 2 starts"]


def test_state_round_trip_and_all() -> None:
    s = Stacked([1, 2], ScheduleConfig(name="sid"))
    s.observe(0, {})
    t = Stacked([1, 2], ScheduleConfig(name="sid"))
    t.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert t.active() == s.active() and t.active().layers == {1, 2}
    a = build_schedule(ScheduleConfig(), [1, 2])
    assert isinstance(a, AllLayers) and a.active().layers is None and a.active().prediction


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_teacher: Path) -> Path:
    out = tmp_path_factory.mktemp("sched") / "teacher"
    api.finetune(build(FinetuneConfig, {"model": str(tiny_teacher), "out": str(out),
                                        "data": {"task": "sst2", "max_train_examples": 64, "max_eval_examples": 32,
                                                 "max_length": 32},
                                        "train": {"epochs": 1, "batch_size": 16, "progress": False, "device": "cpu"}}))
    return out


@pytest.mark.parametrize("name", ["pid", "sid"])
def test_schedule_end_to_end_on_a_tiny_model(name: str, teacher: Path, tmp_path: Path, fast_train: dict) -> None:
    cfg = build(DistillConfig, {
        "teacher": str(teacher), "student": {"num_layers": 2}, "out": str(tmp_path / name),
        "data": {"task": "sst2", "max_train_examples": 48, "max_eval_examples": 32, "max_length": 32},
        "losses": [{"name": "kl"}, {"name": "attn_kl"}, {"name": "cls_cosine"}],
        "mapping": {"strategy": "many_to_one", "group": "all"},
        "schedule": {"name": name, "epochs_per_layer": 1},
        "train": {**fast_train, "epochs": 3}})
    summary = api.distill(cfg)
    hist = summary["history"]
    assert hist[0]["events"] == ["epoch 1: layer 1 done (epoch limit 1); layer 2 starts"]
    assert hist[1]["events"][0].startswith("epoch 2: layer 2 done (epoch limit 1); final stage")
    # epoch 1 trained only layer 1's losses; epoch 2 layer 2 (PID) or layers 1+2 (SID)
    assert set(hist[0]["layer_losses"]["cls_cosine"]) == {"1"}
    assert set(hist[1]["layer_losses"]["cls_cosine"]) == ({"2"} if name == "pid" else {"1", "2"})
    assert ("layer_losses" not in hist[2] or not hist[2]["layer_losses"]) if name == "pid" else \
        set(hist[2]["layer_losses"]["attn_kl"]) == {"1", "2"}


def test_pid_without_layer_losses_is_refused(teacher: Path, tmp_path: Path, fast_train: dict) -> None:
    cfg = build(DistillConfig, {"teacher": str(teacher), "out": str(tmp_path / "x"), "train": fast_train,
                                "data": {"task": "sst2", "max_train_examples": 32},
                                "schedule": {"name": "pid"}})
    with pytest.raises(KDistillError, match="needs per-layer losses"):
        api.distill(cfg)


def test_sid_trains_a_narrowed_student_through_a_projection(teacher: Path, tmp_path: Path, fast_train: dict) -> None:
    """The issue's narrow student: teacher layers narrowed to half width (1 of 2 heads), [CLS] cosine through a
    learned projection, attention KL on head-averaged maps; it trains, stays narrow and loads."""
    cfg = build(DistillConfig, {
        "teacher": str(teacher), "student": {"num_layers": 2, "hidden_size": 16}, "out": str(tmp_path / "narrow"),
        "data": {"task": "sst2", "max_train_examples": 48, "max_eval_examples": 32, "max_length": 32},
        "losses": [{"name": "kl"}, {"name": "attn_kl"}, {"name": "cls_cosine"}],
        "mapping": {"strategy": "many_to_one"},
        "schedule": {"name": "sid", "epochs_per_layer": 1},
        "train": {**fast_train, "epochs": 3}})
    summary = api.distill(cfg)
    assert summary["params"] < sum(p.numel() for p in load_classifier(str(teacher)).parameters())
    student = load_classifier(str(tmp_path / "narrow"))
    assert (student.config.hidden_size, student.config.num_attention_heads) == (16, 1)
    hist = summary["history"]
    assert set(hist[1]["layer_losses"]["cls_cosine"]) == {"1", "2"}
    assert all(math.isfinite(v) for v in hist[1]["layer_losses"]["attn_kl"].values())
