"""`kdistill label` and model names: a failing teacher function, a bad --out, the partial file's name, missing models.

Nothing here touches the network: the Hub endpoint is pointed at a closed port or a server on 127.0.0.1, and the
tests of path-shaped names make any Hub request fail the test.
"""

from __future__ import annotations

import importlib
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from huggingface_hub import constants

from kdistill import api, models
from kdistill.answers import partial_path
from kdistill.cli import main
from kdistill.config import LabelConfig
from kdistill.errors import KDistillError

NAMES = ["negative", "positive"]
ROWS = [f"review number {i} is {'good' if i % 3 else 'bad'}" for i in range(1, 11)]
TEACHER_MODULE = '''
ASKED = []
FAIL_ON = set()

def teach(requests):
    for r in requests:
        if r["text"] in FAIL_ON:
            raise ConnectionError("quota exceeded for this key\\nsecond line of the message")
    ASKED.extend(r["text"] for r in requests)
    return ["positive" if "good" in r["text"] else "negative" for r in requests]
'''


@pytest.fixture
def teacher_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A fresh `python:kd_fault_teacher:teach` whose ASKED lists every text it answered."""
    (tmp_path / "kd_fault_teacher.py").write_text(TEACHER_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("kd_fault_teacher", None)
    module = importlib.import_module("kd_fault_teacher")
    yield module
    sys.modules.pop("kd_fault_teacher", None)


def _input(tmp_path: Path) -> str:
    path = tmp_path / "in.txt"
    path.write_text("\n".join(ROWS) + "\n", encoding="utf-8")
    return str(path)


def _cfg(tmp_path: Path, out: str, **kw: Any) -> LabelConfig:
    return LabelConfig(teacher="python:kd_fault_teacher:teach", input=_input(tmp_path), out=out, label_names=NAMES,
                       batch_size=3, **kw)


# ---------------------------------------------------------------- fault 2: a teacher function that raises


def test_a_raising_teacher_function_is_one_line_naming_it_and_the_line_and_keeps_the_answers(
        tmp_path: Path, teacher_module: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lab.jsonl"
    teacher_module.FAIL_ON.add(ROWS[7])  # line 8: the third batch (lines 7-9) fails
    cfg = _cfg(tmp_path, str(out))
    with pytest.raises(KDistillError) as err:
        api.label(cfg)
    partial = tmp_path / "lab.partial.jsonl"
    assert str(err.value) == (
        f"{cfg.input} line 7 '{ROWS[6]}' (first of a batch of 3): teacher function kd_fault_teacher:teach failed "
        f"with ConnectionError: quota exceeded for this key; 6 of 10 answers are kept in {partial}; a rerun asks "
        "the teacher only for the other 4")
    assert isinstance(err.value.__cause__.__cause__, ConnectionError)  # the original stays reachable
    assert teacher_module.ASKED == ROWS[:6] and not out.exists()
    assert [json.loads(x)["line"] for x in partial.read_text(encoding="utf-8").splitlines()[1:]] == [1, 2, 3, 4, 5, 6]
    # the CLI: one line, exit 2, no traceback
    assert main(["label", "--teacher", cfg.teacher, "--input", cfg.input, "--out", str(out),
                 "--label_names", "[negative, positive]", "--batch_size", "3"]) == 2
    printed = capsys.readouterr().err
    assert "Traceback" not in printed and printed.strip().splitlines()[-1].startswith(
        f"kdistill: error: {cfg.input} line 7 ") and "failed with ConnectionError" in printed
    # the key works again: only the 4 unanswered rows are asked, and the output equals an uninterrupted run's
    teacher_module.FAIL_ON.clear()
    teacher_module.ASKED.clear()
    result = api.label(cfg)
    assert teacher_module.ASKED == ROWS[6:] and (result["reused"], result["asked"], result["kept"]) == (6, 4, 10)
    assert not partial.exists()
    teacher_module.ASKED.clear()
    api.label(cfg.model_copy(update={"out": str(tmp_path / "ref.jsonl")}))
    assert out.read_bytes() == (tmp_path / "ref.jsonl").read_bytes()


def test_a_raising_teacher_on_a_single_example(tmp_path: Path, teacher_module: ModuleType) -> None:
    teacher_module.FAIL_ON.add(ROWS[0])
    with pytest.raises(KDistillError, match=r"in\.txt line 1 'review number 1 is good': teacher function "
                                            r"kd_fault_teacher:teach failed with ConnectionError: quota exceeded "
                                            r"for this key; 0 of 10 answers are kept"):
        api.label(_cfg(tmp_path, str(tmp_path / "one.jsonl")).model_copy(update={"batch_size": 1}))


# ---------------------------------------------------------------- fault 3: --out checked before the first request


def _too_long(tmp_path: Path) -> str:
    return str(tmp_path / ("x" * 300) / "lab.jsonl")  # a folder name no file system accepts


@pytest.mark.parametrize("case,message", [
    ("folder", r"out .*existing is an existing folder, not a file: give the JSONL file to write, "
               r"e.g. --out .*existing/labeled.jsonl"),
    ("under_file", r"out .*a_file/sub/lab.jsonl: a parent of this path is a file, not a folder"),
    ("uncreatable", r"out .*/lab.jsonl: its folder cannot be created: File name too long"),
    ("partial_is_folder", r"out .*lab.jsonl: .*lab.partial.jsonl \(where unfinished answers are kept\) is a folder"),
])
def test_a_bad_out_is_refused_before_the_teacher_is_asked(tmp_path: Path, teacher_module: ModuleType, case: str,
                                                          message: str, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "existing").mkdir()
    (tmp_path / "a_file").write_text("not a folder", encoding="utf-8")
    (tmp_path / "lab.partial.jsonl").mkdir()
    out = {"folder": str(tmp_path / "existing"), "under_file": str(tmp_path / "a_file" / "sub" / "lab.jsonl"),
           "uncreatable": _too_long(tmp_path), "partial_is_folder": str(tmp_path / "lab.jsonl")}[case]
    with pytest.raises(KDistillError, match=message):
        api.label(_cfg(tmp_path, out))
    assert teacher_module.ASKED == []
    code = main(["label", "--teacher", "python:kd_fault_teacher:teach", "--input", _input(tmp_path), "--out", out,
                 "--label_names", "[negative, positive]"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("kdistill: error: out ")
    assert teacher_module.ASKED == [] and not (tmp_path / "existing.partial.jsonl").exists()


def test_a_model_teacher_is_not_even_loaded_when_out_is_bad(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[str] = []
    monkeypatch.setattr(models, "load_classifier", lambda name, **kw: loaded.append(name))
    (tmp_path / "existing").mkdir()
    cfg = LabelConfig(teacher=str(tmp_path / "some-model"), input=_input(tmp_path), out=str(tmp_path / "existing"))
    with pytest.raises(KDistillError, match="is an existing folder"):
        api.label(cfg)
    assert loaded == []


# ---------------------------------------------------------------- fault 4: the partial file's name


def test_the_partial_file_is_named_after_the_output_without_its_jsonl_suffix(tmp_path: Path) -> None:
    assert partial_path("runs/labeled.jsonl") == Path("runs/labeled.partial.jsonl")
    assert partial_path("runs/labeled.JSONL") == Path("runs/labeled.partial.jsonl")
    assert partial_path("runs/lab.txt") == Path("runs/lab.txt.partial.jsonl")
    assert partial_path("runs/lab") == Path("runs/lab.partial.jsonl")


# ---------------------------------------------------------------- fault 5: missing models fail at once


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """HF_HUB_OFFLINE unset, as for users, with an empty Hub cache; the Hub itself is stubbed per test."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    probe = models.hub_reachable  # a test may replace it; its cache is the real one's
    probe.cache_clear()
    yield
    probe.cache_clear()


@pytest.mark.parametrize("name", ["runs/nothing", "./nothing", "../nothing", "/no/such/model", "~/kd-no-such/model",
                                  "runs/a/b"])
def test_a_path_shaped_missing_model_fails_at_once_without_asking_the_hub(
        hub_online: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    (tmp_path / "runs").mkdir()  # 'runs/nothing' is shaped like a hub id; beside ./runs it means the folder

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a path-shaped name must not reach the network")

    monkeypatch.setattr(models, "hub_reachable", no_network)
    monkeypatch.setattr(models.urllib.request, "urlopen", no_network)
    for load in (models.load_classifier, models.load_tokenizer):
        start = time.perf_counter()
        relative = not Path(name).expanduser().is_absolute()  # an absolute path needs no working folder beside it
        with pytest.raises(KDistillError, match=rf"^model folder not found: {name} \(no such folder"
                                                + (" under " if relative else r"\)$")):
            load(name)
        assert time.perf_counter() - start < 5


def test_a_hub_id_fails_fast_when_the_hub_cannot_be_reached(hub_online: None, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    start = time.perf_counter()
    with pytest.raises(KDistillError) as err:
        models.load_classifier("someone/nothing")
    assert time.perf_counter() - start < 5
    assert str(err.value) == (f"model folder not found: someone/nothing (no such folder here, no cached copy, and the "
                              f"Hugging Face Hub ({endpoint}) could not be reached to download a model of that name)")
    start = time.perf_counter()  # and through the CLI, as a label teacher
    code = main(["label", "--teacher", "someone/nothing", "--input", _input(tmp_path),
                 "--out", str(tmp_path / "o.jsonl")])
    printed = capsys.readouterr().err
    assert code == 2 and printed.count("\n") == 1 and "model folder not found: someone/nothing" in printed
    assert time.perf_counter() - start < 5


@contextmanager
def _hub_stub() -> Iterator[tuple[list[str], str]]:
    """A local server standing in for a reachable Hub: it answers every request with 404, and records them."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            seen.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_reachable_hub_passes_the_name_on_and_is_asked_once(hub_online: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with _hub_stub() as (seen, endpoint):
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        assert models.resolve_model_path("someone/model") == "someone/model"  # transformers takes it from here
        assert models.resolve_model_path("other/model") == "other/model"
    assert seen == ["/"]  # one probe per process and endpoint, even for an error status
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1 still wins, with no request at all
    with pytest.raises(KDistillError, match=r"the Hugging Face Hub is offline \(HF_HUB_OFFLINE\)"):
        models.resolve_model_path("someone/model")
