"""What a run and the output commands leave on disk (issue 17, remaining faults).

1. The tokenizer saved with a student (and with an ONNX export) carries no training-time truncation or padding.
2. Files and folders get the modes `open()` and `mkdir()` give (0644 / 0755 under umask 022), not 0600.
3. A finished run folder holds only what the README lists: damaged checkpoints and the temporary folders of
   killed teacher-cache builds are gone.
4. `export`, `report` and `bench` check their output place before any work and fail at once with one line.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from kdistill import api
from kdistill import bench as kbench
from kdistill import export as kexport
from kdistill import report as kreport
from kdistill.atomic import KILL_ENV, KILL_EXIT_CODE, atomic_dir, atomic_path, atomic_write_json, atomic_write_text
from kdistill.cache import remove_stale_builds
from kdistill.checkpoints import set_aside
from kdistill.cli import main
from kdistill.config import DistillConfig, ExportConfig, build, save_config
from kdistill.errors import KDistillError
from kdistill.outputs import save_tokenizer

ROOT = Path(__file__).resolve().parents[1]
LONG_TEXT = " ".join(["a good film with a thin plot but fine acting"] * 12)  # ~120 word pieces, max_length 32
LOSSES = [{"name": "kl", "temperature": 2.0}, {"name": "hidden_mse"}]


def _cfg(teacher: Path, out: Path, tiny_data: dict, fast_train: dict, **extra) -> DistillConfig:
    train = {**fast_train, **extra.pop("train", {})}
    return build(DistillConfig, {"teacher": str(teacher), "student": {"num_layers": 2}, "data": tiny_data,
                                 "train": train, "losses": LOSSES, "out": str(out), **extra})


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _dead_pid() -> int:
    """The id of a process that has ended."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _readme_top_level() -> set[str]:
    """The top-level names of the README's "What a run writes" tree (as tests/test_run_folder.py reads it)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("### What a run writes", 1)[1].split("```", 2)[1]
    listed = {tok for line in block.splitlines()[2:] for tok in line.split("#", 1)[0].split()}
    return {t.split("/", 1)[0] + ("/" if "/" in t else "") for t in listed}


def _top_level(out: Path) -> set[str]:
    return {p.name + ("/" if p.is_dir() else "") for p in out.iterdir()}


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory: pytest.TempPathFactory, tiny_teacher: Path) -> Path:
    """A tiny distillation with the teacher cache in the run folder, run under umask 022.

    Before it starts, `OUT/teacher_cache` holds the temporary folder of a killed build (a process that is gone)
    and one of a build still running (this test's parent process, alive).
    """
    data = {"task": "sst2", "max_train_examples": 96, "max_eval_examples": 48, "max_length": 32}
    train = {"epochs": 1, "batch_size": 16, "eval_batch_size": 32, "lr": 1e-3, "progress": False,
             "save_steps": 1000, "device": "cpu"}
    out = tmp_path_factory.mktemp("cached") / "student"
    host = socket.gethostname()
    with _umask(0o022):
        for pid in (_dead_pid(), os.getppid()):
            leftover = out / "teacher_cache" / f".0123456789abcdef0123.tmp-{host}-{pid}"
            leftover.mkdir(parents=True)
            (leftover / "shard-00000.safetensors").write_bytes(b"partial")
        api.distill(_cfg(tiny_teacher, out, data, train, teacher_cache=True))
    return out


# ---------------------------------------------------------------- 1. the saved tokenizer


def test_a_students_tokenizer_keeps_no_training_truncation(cached_run: Path, tiny_teacher: Path) -> None:
    saved = json.loads((cached_run / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved["truncation"] is None and saved["padding"] is None
    original = json.loads((tiny_teacher / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved == original  # nothing else about the tokenizer changed either
    config = json.loads((cached_run / "tokenizer_config.json").read_text(encoding="utf-8"))
    teacher_config = json.loads((tiny_teacher / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["model_max_length"] == teacher_config["model_max_length"]
    full = len(AutoTokenizer.from_pretrained(tiny_teacher)(LONG_TEXT)["input_ids"])
    assert full > 32 * 3  # the text is far longer than the run's max_length
    assert len(AutoTokenizer.from_pretrained(cached_run)(LONG_TEXT)["input_ids"]) == full
    # the file alone, as serving stacks read it (no transformers call resets the backend's settings)
    assert len(Tokenizer.from_file(str(cached_run / "tokenizer.json")).encode(LONG_TEXT).ids) == full


def test_save_tokenizer_drops_truncation_and_padding_left_by_calls(tiny_teacher: Path, tmp_path: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_teacher)
    tok(["ok", "a fine film"], padding="max_length", truncation=True, max_length=16)
    assert tok.backend_tokenizer.truncation is not None and tok.backend_tokenizer.padding is not None
    tok.save_pretrained(tmp_path / "plain")  # what saving used to do
    plain = json.loads((tmp_path / "plain" / "tokenizer.json").read_text(encoding="utf-8"))
    assert plain["truncation"] is not None and plain["padding"] is not None
    save_tokenizer(tok, tmp_path / "clean")
    clean = json.loads((tmp_path / "clean" / "tokenizer.json").read_text(encoding="utf-8"))
    assert clean == json.loads((tiny_teacher / "tokenizer.json").read_text(encoding="utf-8"))
    reloaded = Tokenizer.from_file(str(tmp_path / "clean" / "tokenizer.json"))
    teacher = Tokenizer.from_file(str(tiny_teacher / "tokenizer.json"))
    assert len(reloaded.encode("ok").ids) == len(teacher.encode("ok").ids) < 16  # not padded to 16
    assert len(reloaded.encode(LONG_TEXT).ids) == len(teacher.encode(LONG_TEXT).ids) > 16  # nor truncated


def test_an_export_writes_a_clean_tokenizer_even_from_a_dirty_folder(tiny_teacher: Path, tmp_path: Path) -> None:
    dirty = tmp_path / "old-run"
    shutil.copytree(tiny_teacher, dirty)
    tok = AutoTokenizer.from_pretrained(tiny_teacher)
    tok(["ok", "a fine film"], padding="max_length", truncation=True, max_length=16)
    tok.save_pretrained(dirty)  # as a run saved before the fix
    assert json.loads((dirty / "tokenizer.json").read_text(encoding="utf-8"))["truncation"] is not None
    kexport.export_onnx(str(dirty), tmp_path / "onnx")
    exported = json.loads((tmp_path / "onnx" / "tokenizer.json").read_text(encoding="utf-8"))
    assert exported["truncation"] is None and exported["padding"] is None


# ---------------------------------------------------------------- 2. file modes


@pytest.mark.parametrize("mask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)],
                         ids=["umask022", "umask027"])
def test_atomic_writes_give_the_modes_open_gives(tmp_path: Path, mask: int, file_mode: int, dir_mode: int) -> None:
    def private(path: Path) -> None:  # as tempfile.mkstemp and safetensors create files
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))

    with _umask(mask):
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        with atomic_path(tmp_path / "w.safetensors") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp))
        with atomic_path(tmp_path / "p.bin") as tmp:
            private(tmp)
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "sub").mkdir(mode=0o700)
            private(tmp / "sub" / "weights.bin")
            save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))
    for name in ("a.txt", "a.json", "w.safetensors", "p.bin", "model/sub/weights.bin", "model/model.safetensors"):
        assert _mode(tmp_path / name) == file_mode, (name, oct(_mode(tmp_path / name)))
    for name in ("model", "model/sub"):
        assert _mode(tmp_path / name) == dir_mode, (name, oct(_mode(tmp_path / name)))


def test_a_finished_run_is_readable_by_others(cached_run: Path) -> None:
    wrong = {str(p.relative_to(cached_run)): oct(_mode(p)) for p in cached_run.rglob("*")
             if _mode(p) != (0o755 if p.is_dir() else 0o644)}
    assert not wrong, wrong
    assert (cached_run / "model.safetensors").is_file()
    assert list((cached_run / "teacher_cache").glob("*/shard-*.safetensors"))


# ---------------------------------------------------------------- 3. leftovers


def test_a_finished_cached_run_keeps_only_the_readme_listing_and_its_cache(cached_run: Path) -> None:
    assert _top_level(cached_run) == _readme_top_level() | {"teacher_cache/"}
    caches = sorted(p.name for p in (cached_run / "teacher_cache").iterdir())
    live = f".0123456789abcdef0123.tmp-{socket.gethostname()}-{os.getppid()}"
    assert len(caches) == 2 and live in caches  # a build still running elsewhere is not touched
    (cache,) = [c for c in caches if not c.startswith(".")]
    assert (cached_run / "teacher_cache" / cache / "manifest.json").is_file()


def test_a_killed_cache_build_leaves_nothing_after_the_rerun(tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                                            fast_train: dict) -> None:
    cfg = _cfg(tiny_teacher, tmp_path / "run", tiny_data, fast_train, teacher_cache=True)
    save_config(cfg, tmp_path / "run.yaml")
    proc = subprocess.run([sys.executable, "-m", "kdistill.cli", "distill", "--config", str(tmp_path / "run.yaml")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, KILL_ENV: "teacher-cache-built", "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == KILL_EXIT_CODE, proc.stderr[-2000:]
    root = tmp_path / "run" / "teacher_cache"
    assert [p.name.startswith(".") for p in root.iterdir()] == [True]  # only the killed build's folder
    api.distill(cfg)
    (cache,) = root.iterdir()
    assert not cache.name.startswith(".") and (cache / "manifest.json").is_file()
    assert _top_level(tmp_path / "run") == _readme_top_level() | {"teacher_cache/"}


def test_remove_stale_builds_keeps_running_ones(tmp_path: Path) -> None:
    dead, host = _dead_pid(), socket.gethostname()
    names = {"dead": f".fp.tmp-{host}-{dead}", "old-style-dead": f".fp2.tmp-{dead}",
             "alive": f".fp.tmp-{host}-{os.getppid()}", "other-host": ".fp.tmp-elsewhere.example-1",
             "cache": "0123456789abcdef0123"}
    for name in names.values():
        (tmp_path / name).mkdir()
    removed = remove_stale_builds(tmp_path, log=lambda _: None)
    assert sorted(p.name for p in removed) == sorted(names[k] for k in ("dead", "old-style-dead"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[k] for k in ("alive", "other-host", "cache"))


def test_damaged_checkpoints_are_removed_at_the_finish(tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                                       fast_train: dict, capsys: pytest.CaptureFixture) -> None:
    cfg = _cfg(tiny_teacher, tmp_path / "cut", tiny_data, fast_train, train={"save_steps": 2, "keep_checkpoints": 2})

    def stop_at_step_5(d) -> None:
        if d.state.global_step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.distill(cfg, callbacks=[stop_at_step_5])
    ckpts = sorted((tmp_path / "cut" / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == ["step-0000002", "step-0000004"]
    weights = ckpts[-1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, as by a full disk
    api.distill(cfg)
    assert "set aside as damaged-step-0000004 until the run finishes" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()] == ["step-0000006"]
    assert _top_level(tmp_path / "cut") == _readme_top_level()


def test_a_checkpoint_damaged_twice_at_one_step_is_set_aside_again(tmp_path: Path) -> None:
    for content in ("first", "second"):
        ckpt = tmp_path / "checkpoints" / "step-0000006"
        ckpt.mkdir(parents=True)
        (ckpt / "model.safetensors").write_text(content)
        aside = set_aside(ckpt)
    assert aside.name == "damaged-step-0000006" and (aside / "model.safetensors").read_text() == "second"
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["damaged-step-0000006"]


# ---------------------------------------------------------------- 4. output places checked first


def _no_work(*_, **__) -> None:
    raise AssertionError("the work started before the output place was checked")


def _one_line_fast(argv: list[str], capsys: pytest.CaptureFixture, *named: Path) -> str:
    start = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert seconds < 2.0, seconds
    assert err.startswith("kdistill: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert all(str(p) in err for p in named), err
    return err


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_export_checks_out_before_exporting(where: str, tiny_teacher: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    out = blocker if where == "file" else blocker / "onnx"
    monkeypatch.setattr(kexport, "load_classifier", _no_work)
    monkeypatch.setattr(kexport, "_export_into", _no_work)
    _one_line_fast(["export", "--model", str(tiny_teacher), "--onnx", "--out", str(out)], capsys, blocker)
    assert blocker.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.parametrize("where", ["the model folder", "its parent", "a folder of other files"])
def test_export_never_replaces_a_folder_of_user_files(where: str, tiny_teacher: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(tiny_teacher, runs / "student")
    (runs / "notes.txt").write_text("keep me")
    out = {"the model folder": runs / "student", "its parent": runs, "a folder of other files": runs}[where]
    model = runs / "student"
    if where == "a folder of other files":  # not the model's parent: a separate model folder beside `runs`
        model = tmp_path / "model"
        shutil.copytree(tiny_teacher, model)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    monkeypatch.setattr(kexport, "load_classifier", _no_work)
    monkeypatch.setattr(kexport, "_export_into", _no_work)
    err = _one_line_fast(["export", "--model", str(model), "--onnx", "--out", str(out)], capsys, out)
    assert "choose a new" in err
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_export_failing_later_leaves_no_empty_out_folder(tiny_teacher: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_, **__) -> None:
        raise KDistillError("parity check failed")

    monkeypatch.setattr(kexport, "_export_into", fail)
    with pytest.raises(KDistillError, match="parity"):
        kexport.export_model(ExportConfig(model=str(tiny_teacher), out=str(tmp_path / "new" / "onnx")))
    assert not (tmp_path / "new" / "onnx").exists()


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_report_checks_out_before_scoring(where: str, cached_run: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    out = blocker if where == "file" else blocker / "report"
    monkeypatch.setattr(kreport, "load_run", _no_work)
    monkeypatch.setattr(kreport, "_score", _no_work)
    _one_line_fast(["report", str(cached_run), "--out", str(out)], capsys, blocker)
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize("where", ["folder", "under-file"])
def test_bench_checks_out_json_before_timing(where: str, tiny_teacher: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    (tmp_path / "a-folder").mkdir()
    target, named = ((tmp_path / "a-folder", tmp_path / "a-folder") if where == "folder"
                     else (blocker / "bench.json", blocker))
    monkeypatch.setattr(kbench, "_load", _no_work)
    monkeypatch.setattr(kbench, "time_shape", _no_work)
    _one_line_fast(["bench", "--model", str(tiny_teacher), "--out_json", str(target)], capsys, named)
    assert blocker.read_text() == "mine"
