"""The training loop end to end on a tiny model: outputs, logs, exact resume after a kill, NaN stop, DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from kdistill import api
from kdistill.config import DistillConfig, FinetuneConfig, build, save_config
from kdistill.distill.losses import LOSSES, register_loss
from kdistill.errors import KDistillError, TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]
FEATURE_LOSSES = [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5},
                  {"name": "hidden_mse"}, {"name": "attn_mse"}, {"name": "embedding_mse"}]


def _distill_cfg(teacher: Path, out: Path, tiny_data: dict, fast_train: dict, **train) -> DistillConfig:
    return build(DistillConfig, {"teacher": str(teacher), "student": {"num_layers": 2}, "data": tiny_data,
                                 "train": {**fast_train, **train}, "losses": FEATURE_LOSSES, "out": str(out)})


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory, tiny_teacher: Path) -> Path:
    out = tmp_path_factory.mktemp("ft") / "teacher"
    cfg = build(FinetuneConfig, {"model": str(tiny_teacher), "out": str(out),
                                 "data": {"task": "sst2", "max_train_examples": 160, "max_eval_examples": 48,
                                          "max_length": 32},
                                 "train": {"epochs": 2, "batch_size": 16, "lr": 2e-3, "progress": False,
                                           "device": "cpu", "log_every": 1}})
    summary = api.finetune(cfg)
    assert summary["test"]["accuracy"] >= 0
    return out


def _scalars(logdir: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def test_finetune_writes_a_teacher_whose_loss_went_down(finetuned: Path) -> None:
    losses = _scalars(finetuned / "logs", "train/ce")
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert (finetuned / "model.safetensors").is_file() and (finetuned / "README.md").is_file()
    metrics = json.loads((finetuned / "metrics.json").read_text())
    assert {"validation", "test", "params"} <= set(metrics)


def test_distill_writes_an_ordinary_hf_folder_and_logs_every_term(finetuned: Path, tmp_path: Path,
                                                                  tiny_data: dict, fast_train: dict) -> None:
    out = tmp_path / "student"
    keys_at_step_3: list[str] = []

    def inspect_checkpoint(d) -> None:
        if d.state.global_step == 3:
            keys_at_step_3.extend(load_file(str(out / "checkpoints" / "step-0000003" / "model.safetensors")))

    summary = api.distill(_distill_cfg(finetuned, out, tiny_data, fast_train, epochs=2, log_every=1, save_steps=3),
                          callbacks=[inspect_checkpoint])
    student = AutoModelForSequenceClassification.from_pretrained(out)
    assert student.config.num_hidden_layers == 2 and student.config.num_labels == 2
    for f in ("model.safetensors", "config.json", "tokenizer.json", "README.md", "metrics.json", "kdistill.yaml"):
        assert (out / f).is_file(), f
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "kdistill" in card
    assert "## Speed" in card and [r["batch_size"] for r in summary["speed"]] == [1, 32]
    assert all(r["p50_ms"] > 0 and r["seq_length"] == tiny_data["max_length"] for r in summary["speed"])
    assert 0 < summary["retention"] < 2 and summary["world_size"] == 1
    for term in ("kl", "ce", "hidden_mse", "attn_mse", "embedding_mse"):
        assert len(_scalars(out / "logs", f"train/{term}")) == 12, term
    # checkpoints hold student + projections, never the teacher
    assert keys_at_step_3 and all(k.startswith(("student.", "objective.")) for k in keys_at_step_3)
    # a finished run keeps only its JSON state, and a rerun does nothing
    (final,) = (out / "checkpoints").iterdir()
    assert [p.name for p in final.iterdir()] == ["run_state.json"]
    assert not (out / "best").exists()  # exported into the folder itself
    before = load_file(str(out / "model.safetensors"))
    again = api.distill(_distill_cfg(finetuned, out, tiny_data, fast_train, epochs=2, log_every=1, save_steps=3))
    assert again["history"] == summary["history"]
    after = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from kdistill import api
from kdistill.config import DistillConfig, load_config

def kill_at_step_7(d):
    if d.state.global_step == 7:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no final checkpoint: a real crash

api.distill(load_config(DistillConfig, {cfg!r}), callbacks=[kill_at_step_7])
"""


@pytest.mark.parametrize("group_by_length", [False, True])
def test_resume_after_kill_gives_the_same_weights(finetuned: Path, tmp_path: Path, tiny_data: dict,
                                                  fast_train: dict, group_by_length: bool) -> None:
    data = {**tiny_data, "max_train_examples": 160}  # 10 steps an epoch, checkpoint every 4
    ref = _distill_cfg(finetuned, tmp_path / "ref", data, fast_train, epochs=2, save_steps=4,
                       group_by_length=group_by_length)
    api.distill(ref)

    cut = ref.model_copy(update={"out": str(tmp_path / "cut")})
    cfg_file = tmp_path / "cut.yaml"
    save_config(cut, cfg_file)
    script = KILL_SCRIPT.format(tests=str(ROOT / "tests"), cfg=str(cfg_file))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    assert [p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()] == ["step-0000004"]

    resumed = api.distill(cut)  # same config: picks up step 4, mid-epoch 1
    a = load_file(str(tmp_path / "ref" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    ref_hist = json.loads((tmp_path / "ref" / "metrics.json").read_text())["history"]
    assert resumed["history"] == ref_hist


def test_nan_loss_stops_the_run_naming_the_term(finetuned: Path, tmp_path: Path, tiny_data: dict,
                                                fast_train: dict) -> None:
    @register_loss("explodes", feature="logits")
    def explodes(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (s - t).sum() * float("nan")

    try:
        cfg = build(DistillConfig, {"teacher": str(finetuned), "data": tiny_data, "train": fast_train,
                                    "student": {"num_layers": 1}, "out": str(tmp_path / "nan"),
                                    "losses": [{"name": "ce"}, {"name": "explodes", "weight": 0.1}]})
        with pytest.raises(TrainingDiverged, match="loss term 'explodes' became nan at epoch 1, step 1"):
            api.distill(cfg)
    finally:
        LOSSES.remove("explodes")  # later tests (in this process) list the registered losses
    assert "explodes" not in LOSSES


def test_an_update_that_overflows_the_weights_is_not_saved(finetuned: Path, tmp_path: Path, tiny_data: dict,
                                                            fast_train: dict) -> None:
    # one step (16 examples, batch 16): its loss is finite, only what the update did to the student is not:
    # 1e300 overflows float32 inside the optimizer, 1e37 leaves weights near 1e38 whose forward pass overflows
    data = {**tiny_data, "max_train_examples": 16}
    for lr, message in ((1e300, r"the optimizer step overflowed the weights at epoch 1, step 1 \(learning rate"),
                        (1e37, r"became non-finite \(nan/inf\) by epoch 1, step 1; lower train.lr")):
        out = tmp_path / f"lr{lr:g}"
        cfg = build(DistillConfig, {"teacher": str(finetuned), "data": data, "train": {**fast_train, "lr": lr},
                                    "student": {"num_layers": 1}, "out": str(out)})
        with pytest.raises(TrainingDiverged, match=message):
            api.distill(cfg)
        assert not (out / "model.safetensors").exists() and not (out / "best").exists()
    for bad in (float("inf"), float("nan")):
        with pytest.raises(KDistillError, match="train.lr: Input should be a finite number"):
            build(DistillConfig, {"train": {"lr": bad}})
    with pytest.raises(KDistillError, match="train.epochs: expected a number, got true"):
        build(DistillConfig, {"train": {"epochs": True}})


def test_two_cpu_processes_on_gloo(finetuned: Path, tmp_path: Path, tiny_data: dict, fast_train: dict) -> None:
    out = tmp_path / "ddp"
    cfg = _distill_cfg(finetuned, out, tiny_data, fast_train, batch_size=8)
    cfg_file = tmp_path / "ddp.yaml"
    save_config(cfg, cfg_file)
    with socket.socket() as probe:  # a free port: another test (or xdist worker) may be using accelerate's 29500
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # this interpreter's accelerate: a venv's console scripts are not on PATH unless it is activated
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend",
           "no", "-m", "kdistill.cli", "distill", "--config", str(cfg_file)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"
    assert summary["distributed"] == "DistributedType.MULTI_CPU"
    # 96 examples, batch 8 per process: each of the 2 processes takes 6 steps, not 12
    assert summary["steps"] == 6
    assert AutoModelForSequenceClassification.from_pretrained(out).config.num_hidden_layers == 2


def test_bf16_and_gradient_accumulation(finetuned: Path, tmp_path: Path, tiny_data: dict, fast_train: dict) -> None:
    cfg = _distill_cfg(finetuned, tmp_path / "acc", tiny_data, fast_train, batch_size=8, grad_accum=3,
                       mixed_precision="bf16")
    summary = api.distill(cfg)
    assert summary["steps"] == 4  # 96 examples / batch 8 = 12 micro-batches, 3 per optimizer step
    assert all(v == v for d in summary["history"][0]["layer_losses"].values() for v in d.values())


def test_no_pickle_is_loaded_anywhere() -> None:
    src = (ROOT / "src" / "kdistill").rglob("*.py")
    for path in src:
        text = path.read_text()
        assert "import pickle" not in text and "pickle.load" not in text, path
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, (path, line)
