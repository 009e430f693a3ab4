"""`kdistill bench`: a grid of timings per model, runtime and shape, with speedup next to the FLOP ratio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_bert

from kdistill import cli
from kdistill.bench import run_bench
from kdistill.config import BenchConfig
from kdistill.speed import flops_per_example


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench")
    return make_tiny_bert(root / "big", num_layers=4), make_tiny_bert(root / "small", num_layers=1)


def test_grid_covers_every_model_runtime_and_shape(two_models, tmp_path: Path) -> None:
    big, small = two_models
    cfg = BenchConfig(model=[str(big), str(small)], batch_sizes=[1, 4], seq_lengths=[8, 16], warmup=1, repeats=3,
                      device="cpu", threads=1, out_json=str(tmp_path / "b.json"))
    result = run_bench(cfg)
    rows = result["rows"]
    assert len(rows) == 2 * 2 * 2 * 2  # models x runtimes x seq lengths x batch sizes
    assert {r["backend"] for r in rows} == {"pytorch", "onnxruntime"}
    for r in rows:
        assert r["p50_ms"] > 0 and r["p95_ms"] >= r["p50_ms"] * 0.999 and r["throughput"] > 0
        if r["model"] == str(big):
            assert r["speedup"] == pytest.approx(1.0) and r["flop_ratio"] == pytest.approx(1.0)
    small_rows = [r for r in rows if r["model"] == str(small)]
    big_cfg = json.loads((big / "config.json").read_text())
    small_cfg = json.loads((small / "config.json").read_text())
    from transformers import BertConfig

    expected = flops_per_example(BertConfig(**big_cfg), 16) / flops_per_example(BertConfig(**small_cfg), 16)
    assert expected > 2.5  # 4 layers vs 1
    assert all(r["flop_ratio"] == pytest.approx(expected) for r in small_rows if r["seq_length"] == 16)
    assert all(r["efficiency"] == pytest.approx(r["speedup"] / r["flop_ratio"]) for r in small_rows)
    for r in small_rows:  # each speedup says whether it can be trusted, from the spread of the same window
        assert r["speedup_low"] <= r["speedup_high"] and isinstance(r["reliable"], bool)
        assert r["reliable"] == (r["unreliable"] is None)
    saved = json.loads((tmp_path / "b.json").read_text())
    assert len(saved["rows"]) == len(rows) and saved["env"]["onnxruntime"]
    assert "Speedup / FLOP ratio" in result["table"] and "onnxruntime" in result["table"]


def test_onnx_runtime_reuses_only_a_checked_export_of_the_same_weights(two_models, tmp_path: Path,
                                                                        monkeypatch) -> None:
    import shutil

    import kdistill.export as kexport
    from kdistill.config import ExportConfig
    from kdistill.export import export_model

    big, _ = two_models
    model_dir = tmp_path / "m"
    shutil.copytree(big, model_dir)
    export_model(ExportConfig(model=str(model_dir), check_examples=8))  # writes m/onnx with export.json

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(kexport, "export_onnx", no_export)
    cfg = BenchConfig(model=[str(model_dir)], batch_sizes=[2], seq_lengths=[8], backends=["onnxruntime"], warmup=0,
                      repeats=2, device="cpu", out_json=None)
    rows = run_bench(cfg)["rows"]  # reused: no export
    assert len(rows) == 1 and rows[0]["backend"] == "onnxruntime"
    with pytest.raises(AssertionError, match="exported again"):  # that export made no int8 file
        run_bench(cfg.model_copy(update={"backends": ["onnxruntime-int8"]}))
    # the same folder with other weights (a copy keeps the onnx/ folder and its times): never reused
    from transformers import AutoModelForSequenceClassification

    changed = AutoModelForSequenceClassification.from_pretrained(model_dir)
    with torch.no_grad():
        changed.classifier.bias.add_(1.0)
    changed.save_pretrained(model_dir)
    with pytest.raises(AssertionError, match="exported again"):
        run_bench(cfg)


def test_cli_repeated_model_flag_and_errors(two_models, tmp_path: Path, capsys) -> None:
    big, small = two_models
    out = tmp_path / "bench.json"
    code = cli.main(["bench", "--model", str(big), "--model", str(small), "--backends", "[pytorch]",
                     "--batch-sizes", "[2]", "--seq-lengths", "[8]", "--repeats", "2", "--warmup", "0",
                     "--device", "cpu", "--out-json", str(out)])
    printed = capsys.readouterr()
    assert code == 0 and out.is_file() and printed.out.count("| pytorch |") == 2 and "bench:" in printed.err
    code = cli.main(["bench", "--model", str(small), "--backends", "[pytorch]", "--batch-sizes", "[2]",
                     "--seq-lengths", "[8]", "--repeats", "2", "--warmup", "0", "--device", "cpu", "--out-json",
                     str(out), "--progress", "false"])
    assert code == 0 and "bench:" not in capsys.readouterr().err  # no progress bar
    code = cli.main(["bench", "--model", str(big), "--seq-lengths", "[4096]", "--backends", "[pytorch]"])
    err = capsys.readouterr().err
    assert code == 2 and "max_position_embeddings" in err and len(err.strip().splitlines()) == 1
    code = cli.main(["bench", "--model", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("kdistill: error:")


def test_int8_runtime_times_a_quantised_export(two_models) -> None:
    _, small = two_models
    cfg = BenchConfig(model=[str(small)], batch_sizes=[2], seq_lengths=[8], warmup=0, repeats=2, device="cpu",
                      backends=["onnxruntime", "onnxruntime-int8"], out_json=None)
    rows = run_bench(cfg)["rows"]
    assert [r["backend"] for r in rows] == ["onnxruntime", "onnxruntime-int8"]
    assert all(r["p50_ms"] > 0 for r in rows)


def test_every_model_and_runtime_shares_one_window_per_shape(two_models, monkeypatch) -> None:
    import kdistill.bench as kbench

    big, small = two_models
    windows: list[tuple[int, int, int]] = []
    real = kbench.time_shape

    def spy(calls, batch_size, seq_length, *args, **kwargs):
        windows.append((seq_length, batch_size, len(calls)))
        return real(calls, batch_size, seq_length, *args, **kwargs)

    monkeypatch.setattr(kbench, "time_shape", spy)
    cfg = BenchConfig(model=[str(big), str(small)], batch_sizes=[1, 2], seq_lengths=[8], backends=["pytorch"],
                      warmup=0, repeats=2, device="cpu", threads=1, out_json=None)
    rows = run_bench(cfg)["rows"]
    assert windows == [(8, 1, 2), (8, 2, 2)]  # both models timed together in each shape's window
    assert len(rows) == 4


def test_busy_machine_marks_speedups_unreliable(two_models, monkeypatch) -> None:
    import kdistill.timing as ktiming

    big, small = two_models
    monkeypatch.setattr(ktiming, "machine_load", lambda: (7.5, 2))
    cfg = BenchConfig(model=[str(big), str(small)], batch_sizes=[2], seq_lengths=[8], backends=["pytorch"],
                      warmup=1, repeats=6, device="cpu", threads=1, out_json=None)
    result = run_bench(cfg)
    small_row = next(r for r in result["rows"] if r["model"] == str(small))
    big_row = next(r for r in result["rows"] if r["model"] == str(big))
    assert small_row["reliable"] is False and "machine busy (load 7.5 on 2 cores)" in small_row["unreliable"]
    assert big_row["reliable"] is True and big_row["speedup"] == 1.0  # the baseline against itself
    assert "x (unreliable) |" in result["table"]
    assert "small pytorch seq 8 batch 2: speedup unreliable: machine busy (load 7.5 on 2 cores)" in result["table"]
    assert result["env"]["load"] == 7.5 and result["env"]["interleaved"] is True
