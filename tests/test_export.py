"""ONNX export: parity with PyTorch on padded batches of new shapes, int8 with its metric change, errors."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from kdistill import export as ex
from kdistill.cli import main
from kdistill.config import DataConfig, ExportConfig, FinetuneConfig, save_config
from kdistill.errors import KDistillError

DATA = {"task": "sst2", "max_eval_examples": 48, "max_length": 32}
TEXTS = ["this is a much longer sentence than any of the others , truly and really", "ok", "a fine film",
         "bad", "the plot is thin but the acting is good"]


@pytest.fixture(scope="module")
def exported(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A run folder (tiny teacher + kdistill.yaml naming its data) exported with int8, data from the yaml.

    The head is scaled up so logits depend visibly on the input: the random tiny teacher's logits are
    almost constant, and a graph that lost the padding mask would still pass a 1e-4 check.
    """
    run = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(tiny_teacher, run)
    model = AutoModelForSequenceClassification.from_pretrained(run)
    with torch.no_grad():
        model.bert.pooler.dense.weight.mul_(30)
        model.classifier.weight.mul_(30)
    model.save_pretrained(run)
    data = DataConfig(**DATA, cache_dir=str(run.parent / "cache"))
    save_config(FinetuneConfig(model=str(tiny_teacher), data=data), run / "kdistill.yaml")
    return run, ex.export_model(ExportConfig(model=str(run), quantize=True, check_examples=12))


def test_export_writes_a_self_describing_folder(exported: tuple[Path, dict[str, Any]]) -> None:
    run, result = exported
    out = run / "onnx"
    assert result["out"] == str(out) and (out / "model.onnx").is_file()
    assert result["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert AutoConfig.from_pretrained(out).num_labels == 2
    assert AutoTokenizer.from_pretrained(out)("a fine film")["input_ids"][0] == 2  # [CLS]
    assert 0 <= result["max_abs_diff"] <= result["atol"] == 1e-4
    assert result["check_examples"] == 12 and len({tuple(s) for s in result["check_shapes"]}) == 2
    assert json.loads((out / "export.json").read_text())["max_abs_diff"] == result["max_abs_diff"]
    session = ex.onnx_session(out / "model.onnx")
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert "stack_trace" not in (out / "model.onnx").read_bytes().decode("latin-1")  # debug metadata stripped


def test_onnx_matches_pytorch_on_new_padded_shapes(exported: tuple[Path, dict[str, Any]]) -> None:
    run, _ = exported
    model = AutoModelForSequenceClassification.from_pretrained(run).eval()
    tok = AutoTokenizer.from_pretrained(run)
    session = ex.onnx_session(run / "onnx" / "model.onnx", threads=1)
    for texts in (TEXTS, TEXTS[1:3]):  # batch 5 x 17 and 2 x 5; the export example was 3 x 11
        batch = dict(tok(texts, padding=True, return_tensors="pt"))
        assert batch["attention_mask"].min() == 0  # really padded
        with torch.inference_mode():
            ref = model(**batch).logits.numpy()
            unmasked = model(**{**batch, "attention_mask": torch.ones_like(batch["input_ids"])}).logits.numpy()
        assert np.abs(unmasked - ref).max() > 1e-2  # a graph that ignored the mask would fail below
        got = ex.onnx_logits(session, batch)
        assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-4
        # int32 numpy in, token_type_ids left out: fed as int64, types filled with zeros as PyTorch does
        small = {k: v.numpy().astype(np.int32) for k, v in batch.items() if k != "token_type_ids"}
        assert np.abs(ex.onnx_logits(session, small) - ref).max() <= 1e-4
    single = dict(tok(TEXTS[:1], return_tensors="pt"))  # batch 1, as in serving
    assert ex.check_parity(model, session, [single], atol=1e-4) <= 1e-4


def test_int8_is_smaller_and_reports_the_metric_change(exported: tuple[Path, dict[str, Any]]) -> None:
    run, result = exported
    q = result["int8"]
    assert Path(q["path"]) == run / "onnx" / "model.int8.onnx" and Path(q["path"]).is_file()
    assert q["size_bytes"] < 0.6 * result["size_bytes"]
    assert q["max_abs_diff"] > result["max_abs_diff"]  # int8 is not exact; fp32 is
    assert (result["metric"], result["split"], result["scored_examples"]) == ("accuracy", "test", 48)
    scores = result["scores"]
    assert set(scores) == {"fp32", "int8"} and all(0 <= v <= 1 for v in scores.values())
    assert result["change"] == pytest.approx(scores["int8"] - scores["fp32"])
    assert "note" not in result  # the data came from the run's kdistill.yaml
    assert "| accuracy (test, 48 examples) |" in result["table"] and "model.int8.onnx" in result["table"]


def test_parity_above_atol_is_an_error(exported: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    run, _ = exported
    model = AutoModelForSequenceClassification.from_pretrained(run).eval()
    batch = dict(AutoTokenizer.from_pretrained(run)(TEXTS, padding=True, return_tensors="pt"))
    int8 = ex.onnx_session(run / "onnx" / "model.int8.onnx")
    with pytest.raises(KDistillError, match=r"differ by up to .* \(> atol 1e-12\)"):
        ex.check_parity(model, int8, [batch], atol=1e-12)
    # end to end (reusing the fixture's graph): a runtime that disagrees with PyTorch fails with one line
    def reuse(model_dir: str, out: Path, **_: Any) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(run / "onnx" / "model.onnx", out / "model.onnx"))

    real = ex.onnx_logits
    monkeypatch.setattr(ex, "export_onnx", reuse)
    monkeypatch.setattr(ex, "onnx_logits", lambda session, b: real(session, b) + 0.01)
    with pytest.raises(KDistillError) as err:
        ex.export_model(ExportConfig(model=str(run), out=str(tmp_path / "bad"), check_examples=4,
                                     data=DataConfig(**DATA, cache_dir=str(run.parent / "cache"))))
    assert "differ by up to 0.01" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "bad" / "model.onnx").exists()  # an unfaithful export is not left for reuse
    assert not list(tmp_path.glob(".bad.tmp-*"))  # nor its temporary folder


def test_cli_export_prints_the_table(tiny_teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "onnx"
    code = main(["export", "--model", str(tiny_teacher), "--onnx", "--out", str(out), "--check_examples", "6",
                 "--data", "{task: sst2, max_eval_examples: 48, max_length: 32}"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "[export]" in captured.out and "| | fp32 ONNX | int8 ONNX |" in captured.out
    assert "| file | model.onnx | - |" in captured.out  # no --quantize: no int8 column values
    assert (out / "model.onnx").is_file() and not (out / "model.int8.onnx").exists()


def test_cli_missing_folder_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["export", "--model", str(tmp_path / "nope"), "--onnx"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("kdistill: error: model folder not found") and err.count("\n") == 1


def test_unsupported_model_and_missing_runtime(tmp_path: Path, tiny_teacher: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    cfg = json.loads((tiny_teacher / "config.json").read_text())
    (bare / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertModel"]}))
    with pytest.raises(KDistillError, match="has no task head"):
        ex.export_onnx(str(bare), tmp_path / "out")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(KDistillError, match=r"onnxruntime is missing.*pip install onnx onnxruntime"):
        ex.export_model(ExportConfig(model=str(tiny_teacher)))


def test_onnx_session_cuda_without_provider(exported: tuple[Path, dict[str, Any]],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    run, _ = exported
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(KDistillError, match="onnxruntime-gpu"):
        ex.onnx_session(run / "onnx" / "model.onnx", device="cuda")
    assert ex.onnx_session(run / "onnx" / "model.onnx", device="auto").get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(KDistillError, match="ONNX model not found"):
        ex.onnx_session(run / "onnx" / "missing.onnx")
