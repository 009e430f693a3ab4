"""Damaged model folders: one line naming the file and exit code 2, as teacher, student or evaluated model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import make_tiny_bert

from kdistill import cli
from kdistill.errors import KDistillError
from kdistill.models import check_model_folder, load_classifier, load_tokenizer, resolve_model_path


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "good", num_layers=2)


def _copy(good: Path, dst: Path) -> Path:
    shutil.copytree(good, dst)
    return dst


def truncated_weights(good: Path, dst: Path) -> tuple[Path, str]:
    folder = _copy(good, dst)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # an interrupted copy
    return folder, f"{weights} is truncated or not a safetensors file"


def corrupt_config(good: Path, dst: Path) -> tuple[Path, str]:
    folder = _copy(good, dst)
    config = folder / "config.json"
    config.write_text(config.read_text()[:40])
    return folder, f"{config} is not valid JSON (line "


def no_tokenizer(good: Path, dst: Path) -> tuple[Path, str]:
    folder = _copy(good, dst)
    for f in folder.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            f.unlink()
    return folder, f"model folder {folder} has no tokenizer files (one of tokenizer.json, vocab.txt"


DAMAGE = [truncated_weights, corrupt_config, no_tokenizer]


def _one_line_exit_2(capsys, argv: list[str], message: str, after_progress: bool = False) -> None:
    """Exit code 2 and a one-line error; `after_progress`: progress bars may precede it on stderr."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert "Traceback" not in err and err.count("kdistill: error:") == 1, err
    line = err[err.index("kdistill: error:"):] if after_progress else err
    assert line.startswith("kdistill: error:") and line.count("\n") == 1 and line.endswith("\n"), err
    assert message in line, (message, err)


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
def test_damaged_folder_as_teacher_student_and_evaluated_model(capsys, tmp_path: Path, good: Path, damage) -> None:
    folder, message = damage(good, tmp_path / "m")
    data = ["--task", "sst2", "--max_train_examples", "16", "--max_eval_examples", "8", "--max_length", "16"]
    _one_line_exit_2(capsys, ["distill", "--teacher", str(folder), "--out", str(tmp_path / "s"), *data], message)
    _one_line_exit_2(capsys, ["distill", "--teacher", str(good), "--student.init", "path", "--student.path",
                              str(folder), "--out", str(tmp_path / "s2"), *data], message)
    _one_line_exit_2(capsys, ["evaluate", "--model", str(folder), "--speed", "false", *data], message)
    # evaluate scores the model before it loads the teacher, so its progress bar comes first
    _one_line_exit_2(capsys, ["evaluate", "--model", str(good), "--teacher", str(folder), "--speed", "false",
                              *data], message, after_progress=True)
    assert not (tmp_path / "s" / "model.safetensors").exists()


def test_intact_folder_passes_the_checks(good: Path) -> None:
    check_model_folder(good)
    assert resolve_model_path(str(good)) == str(good)
    assert len(load_tokenizer(str(good))) > 600


def test_sharded_weights_with_a_missing_shard(tmp_path: Path, good: Path) -> None:
    folder = _copy(good, tmp_path / "sharded")
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                             "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(KDistillError, match="model-00002-of-00002.safetensors is missing"):
        check_model_folder(folder)


def test_weights_of_another_format_are_named(tmp_path: Path, good: Path) -> None:
    folder = _copy(good, tmp_path / "html")
    (folder / "model.safetensors").write_text("<html>404 Not Found</html>")  # a saved error page
    with pytest.raises(KDistillError, match=r"model\.safetensors is truncated or not a safetensors file"):
        load_classifier(str(folder))


def test_a_vocabulary_of_special_tokens_only_is_refused(tmp_path: Path, good: Path) -> None:
    folder = _copy(good, tmp_path / "empty-vocab")
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    with pytest.raises(KDistillError, match="holds only its 5 special tokens"):
        load_tokenizer(str(folder))


def test_file_given_instead_of_folder(tmp_path: Path, good: Path) -> None:
    with pytest.raises(KDistillError, match="is a file; give the model folder"):
        resolve_model_path(str(good / "model.safetensors"))


def test_new_head_is_one_line_not_a_load_report(capsys, tmp_path: Path, good: Path) -> None:
    """Fine-tuning an encoder without a head: one line saying the head is new, not transformers' table."""
    from transformers import BertModel

    bare = tmp_path / "bare"
    BertModel.from_pretrained(str(good)).save_pretrained(bare)
    capsys.readouterr()
    model = load_classifier(str(bare), num_labels=3)
    out = capsys.readouterr()
    assert model.config.num_labels == 3
    lines = [line for line in out.out.splitlines() if "classification head" in line]
    assert len(lines) == 1 and "a new classification head was initialised (classifier.bias, classifier.weight)" \
        in lines[0], out
    assert "LOAD REPORT" not in out.out + out.err and "MISSING" not in out.out + out.err
    load_classifier(str(good))  # a complete checkpoint says nothing
    out = capsys.readouterr()
    assert "classification head" not in out.out and "LOAD REPORT" not in out.out + out.err


def test_missing_encoder_weights_are_still_reported(capsys, tmp_path: Path, good: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = _copy(good, tmp_path / "partial")
    tensors = load_file(str(folder / "model.safetensors"))
    dropped = [k for k in tensors if "encoder.layer.1." in k]
    save_file({k: v for k, v in tensors.items() if k not in dropped}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    load_classifier(str(folder))
    err = capsys.readouterr().err
    assert f"{len(dropped)} encoder weights were missing from the checkpoint" in err, err
