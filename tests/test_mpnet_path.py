"""An MPNet teacher (the family of all-mpnet-base-v2, outside transformers' AttentionInterface) through every step a
user takes: distill with the teacher-output cache and attention KL, export to ONNX with parity, bench, report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, MPNetConfig, MPNetForSequenceClassification, pipeline

from kdistill import api
from kdistill.config import BenchConfig, DistillConfig, ExportConfig, ReportConfig, build
from kdistill.errors import KDistillError


@pytest.fixture(scope="module")
def mpnet_teacher(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer MPNet classifier sharing the tiny WordPiece tokenizer (MPNet's own is WordPiece too)."""
    out = tmp_path_factory.mktemp("mpnet") / "teacher"
    shutil.copytree(tiny_teacher, out)
    for f in [*out.glob("*.safetensors"), out / "config.json"]:
        f.unlink()
    torch.manual_seed(0)
    cfg = MPNetConfig(vocab_size=len((out / "vocab.txt").read_text().splitlines()), hidden_size=32,
                      num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=130,
                      num_labels=2, pad_token_id=0, architectures=["MPNetForSequenceClassification"])
    MPNetForSequenceClassification(cfg).save_pretrained(out)
    return out


def test_an_mpnet_teacher_goes_through_cache_export_bench_and_report(mpnet_teacher: Path, tmp_path: Path,
                                                                     tiny_data: dict, fast_train: dict) -> None:
    out = tmp_path / "student"
    losses = [{"name": "kl", "temperature": 2.0}, {"name": "ce"}, {"name": "hidden_mse"}, {"name": "attn_kl"}]
    cfg = build(DistillConfig, {"teacher": str(mpnet_teacher), "student": {"num_layers": 1}, "data": tiny_data,
                                "train": fast_train, "losses": losses, "out": str(out), "teacher_cache": True})
    summary = api.distill(cfg)
    manifest = json.loads((Path(summary["teacher_cache"]["folder"]) / "manifest.json").read_text())
    assert summary["teacher_cache"]["built"] and manifest["request"]["attn_probs"] == [2]  # pre-dropout maps
    student = AutoModelForSequenceClassification.from_pretrained(out)
    assert student.config.model_type == "mpnet" and student.config.num_hidden_layers == 1
    classify = pipeline("text-classification", model=str(out), tokenizer=str(out))
    assert classify("a fine film")[0]["label"] in {"LABEL_0", "LABEL_1", "negative", "positive"}

    exported = api.export(ExportConfig(model=str(out), check_examples=6))
    assert exported["max_abs_diff"] <= 1e-4 and (out / "onnx" / "model.onnx").is_file()

    bench = api.bench(BenchConfig(model=[str(mpnet_teacher), str(out)], batch_sizes=[1], seq_lengths=[16],
                                  warmup=1, repeats=3, device="cpu", out_json=str(tmp_path / "bench.json")))
    assert {r["backend"] for r in bench["rows"]} == {"pytorch", "onnxruntime"} and len(bench["models"]) == 2
    assert (tmp_path / "bench.json").is_file()

    page = api.report(ReportConfig(runs=[str(out)], out=str(tmp_path / "report"), batch_sizes=[1], repeats=3))
    html = (tmp_path / "report" / "report.html").read_text()
    assert "mpnet" in html.lower() and page


def test_raw_attention_scores_of_an_mpnet_teacher_are_refused_at_set_up(mpnet_teacher: Path, tmp_path: Path,
                                                                        tiny_data: dict, fast_train: dict) -> None:
    cfg = build(DistillConfig, {"teacher": str(mpnet_teacher), "student": {"num_layers": 1}, "data": tiny_data,
                                "train": fast_train, "losses": [{"name": "attn_mse"}], "out": str(tmp_path / "s")})
    with pytest.raises(KDistillError, match="attn_mse.*mpnet"):
        api.distill(cfg)
    assert not (tmp_path / "s" / "kdistill.yaml").exists()
