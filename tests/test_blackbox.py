"""Black-box teachers: real HTTP servers on 127.0.0.1, real subprocesses, imported functions, and imitation.

Every server binds to 127.0.0.1 on a free port, caps the requests it answers, and is shut down at the end of
its test; the HTTP client runs with short timeouts and backoff so failures cost milliseconds.
"""

from __future__ import annotations

import json
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import DATA, make_tiny_bert
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kdistill import api, blackbox
from kdistill.blackbox import (
    CallableTeacher,
    CommandTeacher,
    HttpTeacher,
    ModelTeacher,
    label_file,
    make_source,
    read_examples,
    text_to_label,
)
from kdistill.cli import main
from kdistill.config import DistillConfig, LabelConfig, build
from kdistill.data import load_task_data
from kdistill.errors import KDistillError
from kdistill.evaluate import score_split
from kdistill.teachers.choose import answered_note

NAMES = ["negative", "positive"]
Reply = tuple[int | None, Any]  # status, JSON-able object or raw bytes; status None: drop the connection


@pytest.fixture(autouse=True)
def _fast_local_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blackbox, "BACKOFF_SECONDS", 0.01)
    for var in ("NO_PROXY", "no_proxy"):  # a proxy set in the environment must not intercept 127.0.0.1
        monkeypatch.setenv(var, "127.0.0.1,localhost")


def _texts(n: int) -> list[str]:
    lines = (DATA / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:n + 1]
    return [ln.split("\t")[0] for ln in lines]


@pytest.fixture(scope="module")
def split_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny classifier whose head splits SST-2 texts about evenly with spread-out confidences.

    A random tiny BERT gives every text the same class at ~0.5, which would make label comparisons trivial.
    """
    path = make_tiny_bert(tmp_path_factory.mktemp("bb") / "teacher", num_layers=2)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    enc = AutoTokenizer.from_pretrained(path)(_texts(200), truncation=True, max_length=32, padding=True,
                                              return_tensors="pt")
    with torch.no_grad():
        pooled = model.bert(**enc).pooler_output
        w = torch.randn(pooled.shape[1], generator=torch.Generator().manual_seed(0))
        proj = pooled @ w
        w, mid = w / proj.std(), proj.median() / proj.std()
        model.classifier.weight.copy_(torch.stack([-w, w]))
        model.classifier.bias.copy_(torch.stack([mid, -mid]))
    model.config.id2label, model.config.label2id = dict(enumerate(NAMES)), {n: i for i, n in enumerate(NAMES)}
    model.save_pretrained(path)
    return path


@contextmanager
def serve(respond: Callable[[dict, int], Reply], *, sleep: float | Callable[[int], float] = 0.0,
          max_requests: int = 40) -> Iterator[SimpleNamespace]:
    """A real ThreadingHTTPServer on 127.0.0.1:0 that records requests and how many were in flight at once."""
    state = SimpleNamespace(count=0, inflight=0, max_inflight=0, lock=threading.Lock(), url="")

    class Handler(BaseHTTPRequestHandler):
        timeout = 5  # a stuck client cannot hold a server thread for long

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            with state.lock:
                state.count += 1
                n = state.count
                state.inflight += 1
                state.max_inflight = max(state.max_inflight, state.inflight)
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                time.sleep(sleep(n) if callable(sleep) else sleep)
                status, reply = (500, b"request limit reached") if n > max_requests else respond(body, n)
            finally:  # before replying: the client's next request must not overlap this one in the count
                with state.lock:
                    state.inflight -= 1
            if status is None:  # hang up without a reply, as a crashed worker behind a proxy does
                self.close_connection = True
                return
            data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (the timeout test): nothing to answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/predict"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _by_keyword(body: dict, n: int) -> Reply:
    """Gray-box answer whose class comes from the example's last text: positive when it contains 'good'."""
    outs = [{"probs": [0.1, 0.9] if "good" in x.get("text_pair", x["text"]) else [0.8, 0.2]} for x in body["inputs"]]
    return 200, {"outputs": outs}


def _write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _rows(path: str) -> list[dict]:
    return [json.loads(ln) for ln in Path(path).read_text(encoding="utf-8").splitlines()]


def _answers(path: str | Path) -> list[dict]:
    """The rows less who wrote them: the same answers from a test server on another port."""
    return [{k: v for k, v in r.items() if k != "teacher"} for r in _rows(str(path))]


def _cfg(tmp_path: Path, teacher: str, inp: str, **kw: Any) -> LabelConfig:
    return build(LabelConfig, {"teacher": teacher, "input": inp, "out": str(tmp_path / "out" / "labeled.jsonl"),
                               **kw})


def test_http_teacher_serving_a_model_agrees_with_the_model_teacher(split_teacher: Path, tmp_path: Path) -> None:
    """What the file says equals what the model says for the very batches the server scored.

    The reference is scored in the same batches of 8 as the server, not all 40 at once: a batch's padded length
    sets the matmul shapes, hence the kernels and the float summation order, and on some CPUs that moves
    probabilities by ~3e-5 (nothing bounds it). With equal shapes, one device and one thread count the forward
    pass is the same computation, so the only difference left is the file's rounding to 6 decimals (<= 5e-7).
    """
    texts = _texts(40)
    local = ModelTeacher(str(split_teacher), max_length=32, device="cpu")
    lock = threading.Lock()
    batches: list[list[str]] = []

    def model_server(body: dict, n: int) -> Reply:
        with lock:  # one forward at a time: a fast tokenizer is not safe to share across threads
            batches.append([x["text"] for x in body["inputs"]])
            answers = local.answer([(x["text"],) for x in body["inputs"]])
        return 200, {"outputs": [{"probs": a.probs} for a in answers]}

    with serve(model_server) as srv:
        result = label_file(_cfg(tmp_path, srv.url, _write(tmp_path / "in.txt", ["", *texts, "  "]),
                                 label_names=NAMES, batch_size=8, concurrency=2))
        assert srv.count == 5
    assert sorted(batches) == sorted(texts[i:i + 8] for i in range(0, 40, 8))  # the batches the reference uses
    direct = [a for i in range(0, 40, 8) for a in local.answer([(t,) for t in texts[i:i + 8]])]
    rows = _rows(result["out"])
    assert [r["text"] for r in rows] == texts
    assert [r["label_id"] for r in rows] == [a.label_id for a in direct]
    assert {r["label"] for r in rows} == set(NAMES)  # both classes: agreement is not trivial
    for r, a in zip(rows, direct, strict=True):
        assert r["probs"] == pytest.approx(a.probs, abs=1e-6)
        assert r["confidence"] == pytest.approx(max(a.probs), abs=1e-6)
    assert (result["read"], result["kept"], result["dropped"], result["source"]) == (40, 40, 0, "http")
    assert sum(result["labels"].values()) == 40 and result["examples_per_second"] > 0
    assert "| examples/s |" in result["table"] and "| kept | 40 |" in result["table"] and result["warning"] is None


def test_http_retries_503_with_backoff_then_succeeds() -> None:
    with serve(lambda body, n: (503, b"warming up") if n <= 2 else _by_keyword(body, n)) as srv:
        answers = HttpTeacher(srv.url, retries=3, timeout=5).answer([("good",), ("bad",)])
        assert srv.count == 3
    assert [a.label_id for a in answers] == [1, 0]


def test_http_gives_up_after_retries_plus_one_tries() -> None:
    with serve(lambda body, n: (500, b"internal trouble")) as srv:
        with pytest.raises(KDistillError, match=r"failed after 3 tries; last: HTTP 500 'internal trouble'"):
            HttpTeacher(srv.url, retries=2, timeout=5).answer([("x",)])
        assert srv.count == 3


@pytest.mark.parametrize("status, body, expected", [
    (200, b"<html>oops</html>", r"answered HTTP 200 with a body that is not JSON: '<html>oops"),
    (400, b'{"error": "text too long"}', r"answered HTTP 400: '\{\"error\": \"text too long\"\}'"),
    (200, {"result": [1]}, r'without \{"outputs": \[one answer per input\]\}'),
    (200, {"outputs": [{"probs": [0.3, 0.3]}]}, r"probs that are not a distribution"),
    (200, {"outputs": [{"probs": [1.0]}, {"probs": [1.0]}]}, r"2 answers for 1 examples"),
])
def test_http_bad_answers_fail_at_once_on_one_line(status: int, body: Any, expected: str) -> None:
    with serve(lambda b, n: (status, body)) as srv:
        with pytest.raises(KDistillError, match=expected) as err:
            HttpTeacher(srv.url, retries=3, timeout=5, label_names=NAMES).answer([("x",)])
        assert srv.count == 1  # not retried: the same request would get the same answer
    assert "\n" not in str(err.value) and srv.url in str(err.value)


def test_http_unreachable_and_timed_out_endpoints_are_retried_then_named() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(KDistillError, match=rf"127.0.0.1:{port}/ failed after 3 tries; last: .*refused"):
        HttpTeacher(f"http://127.0.0.1:{port}/", retries=2, timeout=2).answer([("x",)])
    assert time.perf_counter() - start < 2  # backoff 0.01 s, 0.02 s
    with serve(_by_keyword, sleep=0.6) as srv:
        with pytest.raises(KDistillError, match=r"failed after 2 tries; last: .*timed out"):
            HttpTeacher(srv.url, retries=1, timeout=0.2).answer([("x",)])
        assert srv.count == 2


@pytest.mark.parametrize("concurrency", [1, 3])
def test_http_concurrency_limit_is_respected(tmp_path: Path, concurrency: int) -> None:
    inp = _write(tmp_path / "in.txt", [f"good example {i}" for i in range(16)])
    with serve(_by_keyword, sleep=0.15) as srv:
        result = label_file(_cfg(tmp_path, srv.url, inp, label_names=NAMES, batch_size=2, concurrency=concurrency))
        assert srv.count == 8
        assert srv.max_inflight <= concurrency  # never above the limit...
        assert srv.max_inflight > 1 if concurrency > 1 else srv.max_inflight == 1  # ...and the pool does use it
    assert result["labels"] == {"negative": 0, "positive": 16}


def test_pairs_keep_alignment_under_concurrency(tmp_path: Path) -> None:
    """Later batches answer first (shorter sleeps); rows must still come out in input order, pairs intact."""
    pairs = [(f"premise {i}", f"{'good' if i % 3 == 0 else 'poor'} hypothesis {i}") for i in range(24)]
    inp = _write(tmp_path / "in.tsv", ["id\tsentence1\tsentence2", *(f"{i}\t{a}\t{b}" for i, (a, b) in
                                                                    enumerate(pairs))])
    with serve(_by_keyword, sleep=lambda n: 0.02 * (7 - n % 7)) as srv:
        result = label_file(_cfg(tmp_path, srv.url, inp, label_names=NAMES, batch_size=3, concurrency=4))
        assert srv.count == 8
    rows = _rows(result["out"])
    assert [(r["text"], r["text_pair"]) for r in rows] == pairs
    assert [r["label"] for r in rows] == ["positive" if "good" in b else "negative" for _, b in pairs]


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "teacher_cmd.py"
    path.write_text("import json, sys\n" + body, encoding="utf-8")
    return f"command:{shlex.quote(sys.executable)} {shlex.quote(str(path))}"


def test_command_teacher_one_process_per_batch(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    spec = _script(tmp_path, f"open({str(log)!r}, 'a').write('call\\n')\n"
                   "for line in sys.stdin:\n"
                   "    x = json.loads(line)\n"
                   "    print(json.dumps({'label': 'Positive' if 'good' in x['text'] else 'NEGATIVE'}))\n")
    texts = ["a good film", "a dull film", "good", "bad", "so good"]
    result = label_file(_cfg(tmp_path, spec, _write(tmp_path / "in.txt", texts), label_names=NAMES, batch_size=2))
    assert [r["label"] for r in _rows(result["out"])] == ["positive", "negative", "positive", "negative", "positive"]
    assert log.read_text().count("call") == 3 and result["source"] == "command"
    assert all("probs" not in r for r in _rows(result["out"]))
    with pytest.raises(KDistillError, match=r"min_confidence needs probabilities.*teacher command"):
        label_file(_cfg(tmp_path, spec, str(tmp_path / "in.txt"), label_names=NAMES, min_confidence=0.5))


@pytest.mark.parametrize("body, expected", [
    ("sys.stderr.write('model file missing\\n'); sys.exit(1)\n", r"exited with code 1; last stderr line: "
                                                                 r"'model file missing'"),
    ("sys.stdin.read(); print('{\"label\": 1}'); print('not json at all')\n", r"output line 2 is not JSON: "
                                                                              r"'not json at all'"),
    ("sys.stdin.read(); print('{\"label\": 1}')\n", r"wrote 1 answer lines for 2 request lines"),
    ("sys.stdin.read(); print('{\"label\": 0}'); print('{\"label\": 7}')\n", r"label id 7, outside 0..1"),
])
def test_command_failures_name_the_command_and_the_line(tmp_path: Path, body: str, expected: str) -> None:
    teacher = make_source(_script(tmp_path, body), label_names=NAMES, timeout=10)
    assert isinstance(teacher, CommandTeacher)
    with pytest.raises(KDistillError, match=expected) as err:
        teacher.answer([("a",), ("b",)])
    assert "teacher_cmd.py" in str(err.value) and "\n" not in str(err.value)


def test_command_not_found_and_too_slow(tmp_path: Path) -> None:
    with pytest.raises(KDistillError, match=r"command not found: kdistill-no-such-teacher-xyz"):
        make_source("command:kdistill-no-such-teacher-xyz --flag").answer([("a",)])
    slow = make_source(_script(tmp_path, "import time; time.sleep(5)\n"), timeout=0.5)
    with pytest.raises(KDistillError, match=r"did not finish a batch of 1 within 0.5 s"):
        slow.answer([("a",)])


def test_python_function_teacher_and_min_confidence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kd_test_teacher_mod.py").write_text(
        "def teach(requests):\n"
        "    return [{'logits': [0.0, float(r['text'].split()[-1])]} for r in requests]\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    scores = [3.0, -3.0, 0.2, -0.5, 4.0, 0.0]  # confidences .95 .95 .55 .62 .98 .5
    inp = _write(tmp_path / "in.txt", [f"example {s}" for s in scores])
    result = label_file(_cfg(tmp_path, "python:kd_test_teacher_mod:teach", inp, label_names=NAMES,
                             min_confidence=0.6, batch_size=4))
    rows = _rows(result["out"])
    assert [r["text"] for r in rows] == ["example 3.0", "example -3.0", "example -0.5", "example 4.0"]
    assert [r["label"] for r in rows] == ["positive", "negative", "negative", "positive"]
    assert all(r["confidence"] >= 0.6 and len(r["logits"]) == 2 for r in rows)
    assert (result["read"], result["kept"], result["dropped"]) == (6, 4, 2)
    assert result["labels"] == {"negative": 2, "positive": 2} and result["source"] == "python"
    assert "| dropped (confidence < 0.6) | 2 |" in result["table"]
    numpy_fn = CallableTeacher(lambda reqs: [{"probs": np.array([0.25, 0.75])}, np.int64(0)], label_names=NAMES)
    assert [(a.label_id, a.probs) for a in numpy_fn.answer([("a",), ("b",)])] == [(1, [0.25, 0.75]), (0, None)]
    with pytest.raises(KDistillError, match=r"cannot import module 'kd_no_such_mod'"):
        make_source("python:kd_no_such_mod:teach")
    with pytest.raises(KDistillError, match=r"has no function 'missing'"):
        make_source("python:kd_test_teacher_mod:missing")


def test_generated_text_maps_to_label_names() -> None:
    assert text_to_label("Positive", NAMES) == 1
    assert text_to_label("  The answer is: negative.", NAMES) == 0
    nli = ["entailment", "not_entailment"]
    assert text_to_label("Not-Entailment", nli) == 1
    assert text_to_label("I would say not entailment here", nli) == 1
    assert text_to_label("entailment", nli) == 0
    with pytest.raises(KDistillError, match=r"answered 'maybe', which contains no label name; label names: "
                                            r"negative, positive"):
        text_to_label("maybe", NAMES)
    with pytest.raises(KDistillError, match=r"several label names \(negative, positive\)"):
        text_to_label("positive or negative", NAMES)
    gen = CallableTeacher(lambda reqs: [f"Sentiment: {r['text']}!" for r in reqs], label_names=NAMES)
    assert [a.label_id for a in gen.answer([("POSITIVE",), ("negative",)])] == [1, 0]
    with pytest.raises(KDistillError, match=r"answered 'Sentiment: neutral!'"):
        gen.answer([("neutral",)])
    with pytest.raises(KDistillError, match=r"no label names are known: set label_names"):
        CallableTeacher(lambda reqs: ["positive"] * len(reqs)).answer([("x",)])


def test_reading_inputs(tmp_path: Path) -> None:
    assert read_examples(_write(tmp_path / "a.txt", ["one", "", "  two  "])) == [("one",), ("two",)]
    csv_in = _write(tmp_path / "a.csv", ["id,sentence,label", "1,hello there,0", "2,bye,1"])
    assert read_examples(csv_in) == [("hello there",), ("bye",)]
    assert read_examples(csv_in, [0]) == [("1",), ("2",)]
    jl = _write(tmp_path / "a.jsonl", [json.dumps({"q": "why", "a": "because"}), json.dumps({"q": "how", "a": "so"})])
    assert read_examples(jl) == [("why",), ("how",)]  # no GLUE-style name: the first column
    assert read_examples(jl, ["q", "a"]) == [("why", "because"), ("how", "so")]
    with pytest.raises(KDistillError, match=r"column 'x' not found .* \(available: q, a\)"):
        read_examples(jl, ["x"])
    with pytest.raises(KDistillError, match=r"input file not found: .*nope.txt"):
        read_examples(str(tmp_path / "nope.txt"))
    with pytest.raises(KDistillError, match=r"input file has no examples"):
        read_examples(_write(tmp_path / "blank.txt", ["", "   "]))
    with pytest.raises(KDistillError, match=r"a.csv line 3: empty or missing text"):
        read_examples(_write(tmp_path / "a.csv", ["sentence,label", "fine,0", ",1"]))


def test_cli_label_prints_the_table_and_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "kd_cli_teacher.py").write_text("def teach(reqs):\n    return [1 for _ in reqs]\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    inp, out = _write(tmp_path / "in.txt", ["a", "b", "c"]), str(tmp_path / "o.jsonl")
    assert main(["label", "--teacher", "python:kd_cli_teacher:teach", "--input", inp, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "| examples read | 3 |" in printed and "| labels | 0 0 (0.0%), 1 3 (100.0%) |" in printed
    assert [r["label"] for r in _rows(out)] == ["1", "1", "1"]
    assert "| warning | kdistill distill will number these labels 1 (alphabetically" in printed
    code = main(["label", "--teacher", "python:kd_cli_teacher:teach", "--input", str(tmp_path / "missing.txt")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("kdistill: error: input file not found") and err.count("\n") == 1


def test_labeled_file_trains_a_student_by_imitation(split_teacher: Path, tmp_path: Path, fast_train: dict) -> None:
    texts = _texts(120)
    labeled = label_file(_cfg(tmp_path, str(split_teacher), _write(tmp_path / "in.txt", texts), max_length=32,
                              device="cpu", min_confidence=0.55))
    rows = _rows(labeled["out"])
    assert labeled["source"] == "model" and labeled["warning"] is None and 20 < labeled["kept"] < 120
    assert {r["label"] for r in rows} == set(NAMES)
    data = {"task": None, "train_file": labeled["out"], "text_columns": ["text"], "label_column": "label",
            "max_length": 32, "validation_fraction": 0.2, "cache_dir": str(tmp_path / "tok")}
    cfg = build(DistillConfig, {"teacher": str(split_teacher), "student": {"num_layers": 1}, "data": data,
                                "losses": [{"name": "ce"}], "train": fast_train, "out": str(tmp_path / "student")})
    loaded = load_task_data(cfg.data)
    assert loaded.label_names == NAMES  # string labels read back in the teacher's id order
    by_text = {r["text"]: r["label_id"] for r in rows}
    teacher = AutoModelForSequenceClassification.from_pretrained(split_teacher).eval()
    tokenizer = AutoTokenizer.from_pretrained(split_teacher)
    for split in ("train", "validation"):
        ds = loaded.splits[split]
        assert all(by_text[t] == y for t, y in zip(ds["text_a"], ds["label"], strict=True))
        # the teacher agrees with its own labels as training reads them: ids line up end to end
        assert score_split(teacher, tokenizer, loaded, split, 32, cache_dir=data["cache_dir"],
                           progress=False)["accuracy"] == 1.0
    summary = api.distill(cfg)
    assert summary["task"] == "labeled" and summary["steps"] == -(-len(loaded.splits["train"]) // 16)
    assert 0 <= summary["validation"]["accuracy"] <= 1
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    assert student.config.num_hidden_layers == 1 and student.config.id2label[1] == "positive"


def test_gray_box_soft_targets_from_the_labeled_file_equal_the_live_teacher(split_teacher: Path, tmp_path: Path,
                                                                             fast_train: dict) -> None:
    """KL on a labelled file's stored logits trains exactly the student that KL on the live teacher trains."""
    from safetensors.torch import load_file

    labeled = label_file(_cfg(tmp_path, str(split_teacher), _write(tmp_path / "in.txt", _texts(64)), max_length=32,
                              device="cpu"))
    data = {"task": None, "train_file": labeled["out"], "text_columns": ["text"], "label_column": "label",
            "max_length": 32, "validation_fraction": 0.2, "cache_dir": str(tmp_path / "tok")}
    base = {"teacher": str(split_teacher), "student": {"num_layers": 1}, "data": data,
            "losses": [{"name": "kl", "temperature": 2.0}], "train": fast_train}
    live = api.distill(build(DistillConfig, {**base, "out": str(tmp_path / "live")}))
    gray = api.distill(build(DistillConfig, {**base, "out": str(tmp_path / "gray"), "teacher_answers": labeled["out"]}))
    assert live["steps"] == gray["steps"] > 0
    a = load_file(str(tmp_path / "live" / "model.safetensors"))
    b = load_file(str(tmp_path / "gray" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5, msg=k)
    # a row the file does not answer, and feature losses, are one-line errors
    other = tmp_path / "other.txt"
    unseen = [f"a sentence number {i} the teacher never saw" for i in range(10)]  # some land in train
    other.write_text("\n".join(_texts(64)[:40] + unseen) + "\n")
    partial = label_file(_cfg(tmp_path, str(split_teacher), str(other), max_length=32, device="cpu",
                              out=str(tmp_path / "partial.jsonl")))
    with pytest.raises(KDistillError, match="not in teacher_answers"):
        api.distill(build(DistillConfig, {**base, "out": str(tmp_path / "p"), "teacher_answers": labeled["out"],
                                          "data": {**data, "train_file": partial["out"]}}))
    with pytest.raises(KDistillError, match="response losses"):
        api.distill(build(DistillConfig, {**base, "out": str(tmp_path / "h"), "teacher_answers": labeled["out"],
                                          "losses": [{"name": "kl"}, {"name": "hidden_mse"}]}))


def test_a_model_teachers_classes_cannot_be_renamed_into_another_order(split_teacher: Path, tmp_path: Path) -> None:
    """label_names in another order than the model's id2label would write 'negative' on what it calls positive."""
    inp = _write(tmp_path / "in.txt", _texts(8))
    with pytest.raises(KDistillError, match=r"^label_names \['positive', 'negative'\] differ from model .*'s own "
                                            r"classes \['negative', 'positive'\] \(id2label in its config.json\)"):
        label_file(_cfg(tmp_path, str(split_teacher), inp, device="cpu", label_names=["positive", "negative"]))
    same = label_file(_cfg(tmp_path, str(split_teacher), inp, device="cpu", label_names=NAMES))
    assert {r["label"] for r in _rows(same["out"])} <= set(NAMES)
    # transformers' placeholder names (LABEL_0, LABEL_1) are there to be named
    plain = make_tiny_bert(tmp_path / "plain", num_layers=1)
    named = label_file(_cfg(tmp_path, str(plain), inp, device="cpu", label_names=["no", "yes"],
                            out=str(tmp_path / "named.jsonl")))
    assert {r["label"] for r in _rows(named["out"])} <= {"no", "yes"}


def test_answers_that_do_not_fit_the_training_data_are_refused_at_set_up(split_teacher: Path, tmp_path: Path,
                                                                        fast_train: dict) -> None:
    """Before any step and leaving no run folder: answers of another length, answers that miss training rows (the
    first 30 rows labelled, the run training on rows that reach past them), and a folder given as the file."""
    texts = _texts(64)
    labeled = label_file(_cfg(tmp_path, str(split_teacher), _write(tmp_path / "in.txt", texts), max_length=32,
                              device="cpu"))
    data = {"task": None, "train_file": str(_write(tmp_path / "train.txt", texts)), "text_columns": ["text"],
            "label_column": "label", "max_length": 32, "validation_fraction": 0.2, "cache_dir": str(tmp_path / "tok")}
    # a .txt train file has no labels: give it the teacher's, as a TSV
    train = tmp_path / "train.tsv"
    train.write_text("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in _rows(labeled["out"])))
    data = {**data, "train_file": str(train)}
    base = {"teacher": str(split_teacher), "student": {"num_layers": 1}, "data": data,
            "losses": [{"name": "kl", "temperature": 2.0}], "train": fast_train}
    rows = [json.loads(line) for line in Path(labeled["out"]).read_text().splitlines()]
    three = tmp_path / "three.jsonl"
    three.write_text("".join(json.dumps({**r, "probs": [*r["probs"][:1], 0.0, r["probs"][1]],
                                         "logits": [*r["logits"][:1], -9.0, r["logits"][1]]}) + "\n" for r in rows))
    first = tmp_path / "first30.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in rows[:30]))
    cases = [(three, r"three.jsonl line 1: 3 values in its answer, but the data has 2 classes"),
             (first, r"^\d+ of 51 training examples are not in teacher_answers .*first30.jsonl, the first: .+\. "
                     r"Rows are matched by text: label the whole training file"),
             (tmp_path, r"teacher_answers is a folder, not a file")]
    for k, (answers, message) in enumerate(cases):
        out = tmp_path / f"refused{k}"
        with pytest.raises(KDistillError, match=message):
            api.distill(build(DistillConfig, {**base, "out": str(out), "teacher_answers": str(answers)}))
        assert not out.exists()


def test_stored_answers_alone_teach_a_student_folder_with_no_teacher_model(split_teacher: Path, tmp_path: Path,
                                                                          fast_train: dict) -> None:
    """An API teacher leaves nothing but its answers: `teacher: null` trains the student folder exactly as a run
    that also loads a teacher model, which there only sets things up."""
    from safetensors.torch import load_file

    from kdistill.cli import build_parser, config_from_args

    labeled = label_file(_cfg(tmp_path, str(split_teacher), _write(tmp_path / "in.txt", _texts(64)), max_length=32,
                              device="cpu"))
    small = make_tiny_bert(tmp_path / "small", num_layers=1, seed=1, label_names=NAMES)
    data = {"task": None, "train_file": labeled["out"], "text_columns": ["text"], "label_column": "label",
            "max_length": 32, "validation_fraction": 0.2, "cache_dir": str(tmp_path / "tok")}
    base = {"student": {"init": "path", "path": str(small)}, "data": data, "teacher_answers": labeled["out"],
            "losses": [{"name": "kl", "temperature": 2.0, "weight": 0.5}, {"name": "ce", "weight": 0.5}],
            "train": fast_train}
    with_model = api.distill(build(DistillConfig, {**base, "teacher": str(split_teacher), "out": str(tmp_path / "a")}))
    alone = api.distill(build(DistillConfig, {**base, "teacher": None, "out": str(tmp_path / "b")}))
    assert with_model["steps"] == alone["steps"] > 0 and alone["teacher"] is None
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "b").config.id2label[1] == "positive"
    # the file says who answered on every row; a run taught by it credits that teacher, and says so when the
    # teacher folder it was given is another model (whose outputs it never reads)
    rows = [json.loads(line) for line in Path(labeled["out"]).read_text().splitlines()]
    assert {r["teacher"] for r in rows} == {str(split_teacher)}
    assert alone["teacher_answers"] == {"file": labeled["out"], "written_by": [str(split_teacher)]}
    card = (tmp_path / "b" / "README.md").read_text()
    assert f"teacher answers: {labeled['out']}, written by {split_teacher})" in card
    assert "distilled with kdistill (knowledge distillation) starting from the local model folder" in card  # not "from"
    assert answered_note([str(split_teacher)], f"{split_teacher}/") == f"answered by teacher_answers (written by " \
                                                                      f"{split_teacher})"
    assert answered_note([str(split_teacher)], str(small)).endswith(f"; note: not by {small}, whose outputs this run "
                                                                    "never reads")
    assert answered_note([], str(small)) == "answered by teacher_answers"  # a file from elsewhere names no one
    # the flag spells it as YAML does; without answers, or with a student built from a teacher, it is one line
    cli = config_from_args("distill", build_parser().parse_args(
        ["distill", "--teacher", "null", "--teacher_answers", labeled["out"], "--student.init", "path",
         "--student.path", str(small)]))
    assert cli.teacher is None
    with pytest.raises(KDistillError, match=r"teacher is null: give the teacher's answers \(teacher_answers"):
        build(DistillConfig, {"teacher": None})
    with pytest.raises(KDistillError, match=r"teacher is null: the student must be a model folder \(student.init: "
                                            r"path, student.path: DIR\), not 'teacher_layers'"):
        build(DistillConfig, {"teacher": None, "teacher_answers": labeled["out"]})
    with pytest.raises(KDistillError, match="teacher is null: teacher_cache needs a teacher model"):
        build(DistillConfig, {**base, "teacher": None, "teacher_cache": True})


# --- resuming: answers survive a failed or killed run; a rerun asks only for the rest ---------------------------

ROWS = [f"{'good' if i % 3 == 0 else 'dull'} film number {i}" for i in range(20)]


class Flaky:
    """A keyword teacher that fails every try of a batch holding a text in `fail`: 503, drop, 503, 503, ...

    `asked` lists the texts it answered, so a test can count what a rerun paid for.
    """

    def __init__(self, fail: set[str] | None = None) -> None:
        self.fail, self.asked, self.tries = set(fail or ()), [], 0

    def __call__(self, body: dict, n: int) -> Reply:
        texts = [x["text"] for x in body["inputs"]]
        if self.fail & set(texts):
            self.tries += 1
            return (None, None) if self.tries % 4 == 2 else (503, b"overloaded")
        self.asked += texts
        return _by_keyword(body, n)


def _label_cli(url: str, inp: str, out: str, concurrency: int = 1) -> int:
    return main(["label", "--teacher", url, "--input", inp, "--out", out, "--label_names", "[negative, positive]",
                 "--batch_size", "4", "--concurrency", str(concurrency), "--retries", "3", "--timeout", "5"])


def _partial(out: str) -> list[dict]:
    return _rows(out.removesuffix(".jsonl") + ".partial.jsonl")


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_failed_batch_keeps_the_answers_and_a_rerun_asks_only_for_the_rest(
        tmp_path: Path, concurrency: int, capsys: pytest.CaptureFixture[str]) -> None:
    inp, out = _write(tmp_path / "in.txt", ROWS), str(tmp_path / "labeled.jsonl")
    with serve(_by_keyword) as srv:  # the reference: one uninterrupted run
        assert _label_cli(srv.url, inp, str(tmp_path / "ref.jsonl")) == 0
    capsys.readouterr()
    teacher = Flaky(fail={ROWS[9]})  # batch 2 of 5 (rows 8..11) fails on every try
    with serve(teacher) as srv:
        assert _label_cli(srv.url, inp, out, concurrency) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert teacher.tries == 4 and not Path(out).exists()
        kept = _partial(out)[1:]
        assert {r["line"] for r in kept} == {n + 1 for n in range(20) if ROWS[n] in teacher.asked}
        assert not {9, 10, 11, 12} & {r["line"] for r in kept}  # the failing batch has no answers
        if concurrency == 1:  # batches after the failing one are never started
            assert srv.count == 2 + 4 and [r["line"] for r in kept] == list(range(1, 9))
        else:  # batches 0 and 1 were in flight beside batch 2: awaited and kept
            assert len(kept) >= 8 and len(kept) % 4 == 0
        assert err.startswith("kdistill: error: teacher endpoint") and "failed after 4 tries; last: HTTP 503" in err
        assert f"{len(kept)} of 20 answers are kept in {tmp_path / 'labeled.partial.jsonl'}" in err
        teacher.fail, teacher.asked, before = set(), [], srv.count
        assert _label_cli(srv.url, inp, out, concurrency) == 0  # the endpoint recovered
        assert sorted(teacher.asked) == sorted(r for n, r in enumerate(ROWS, 1) if n not in {k["line"] for k in kept})
        assert srv.count - before == -(-(20 - len(kept)) // 4)
    printed = capsys.readouterr()
    assert f"reusing {len(kept)} answers, asking the teacher for {20 - len(kept)}" in printed.err
    assert f"| reused from an earlier run | {len(kept)} |" in printed.out
    assert _answers(out) == _answers(tmp_path / "ref.jsonl")
    assert not (tmp_path / "labeled.partial.jsonl").exists()


def test_a_line_cut_short_by_a_kill_is_ignored_and_cut_off(tmp_path: Path) -> None:
    inp, out = _write(tmp_path / "in.txt", ROWS), str(tmp_path / "labeled.jsonl")
    with serve(_by_keyword) as srv:
        reference = label_file(_cfg(tmp_path, srv.url, inp, label_names=NAMES, batch_size=4,
                                    out=str(tmp_path / "ref.jsonl")))
    teacher = Flaky(fail={ROWS[8]})
    with serve(teacher, max_requests=100) as srv:
        cfg = _cfg(tmp_path, srv.url, inp, label_names=NAMES, batch_size=4, concurrency=1, retries=1, out=out)
        with pytest.raises(KDistillError, match=r"8 of 20 answers are kept"):
            label_file(cfg)
        partial = tmp_path / "labeled.partial.jsonl"
        with partial.open("a", encoding="utf-8") as f:  # what a kill in the middle of a write leaves
            f.write('{"line": 9, "sha": "0f3a9c')
        teacher.fail, teacher.asked = {ROWS[16]}, []
        with pytest.raises(KDistillError, match=r"16 of 20 answers are kept"):
            label_file(cfg)
        assert teacher.asked == ROWS[8:16]
        lines = partial.read_text(encoding="utf-8").split("\n")
        assert lines[-1] == "" and [json.loads(ln)["line"] for ln in lines[1:-1]] == list(range(1, 17))
        teacher.fail, teacher.asked = set(), []
        result = label_file(cfg)
        assert teacher.asked == ROWS[16:] and (result["reused"], result["asked"]) == (16, 4)
    assert _answers(out) == _answers(reference["out"]) and not partial.exists()


def test_an_edited_input_is_not_mixed_with_old_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp, out = tmp_path / "in.txt", str(tmp_path / "labeled.jsonl")
    partial = tmp_path / "labeled.partial.jsonl"
    _write(inp, ROWS)
    teacher = Flaky(fail={ROWS[12]})
    with serve(teacher, max_requests=100) as srv:
        cfg = _cfg(tmp_path, srv.url, str(inp), label_names=NAMES, batch_size=4, concurrency=1, retries=0, out=out)
        with pytest.raises(KDistillError, match=r"12 of 20 answers are kept"):
            label_file(cfg)
        header = json.loads(partial.read_text(encoding="utf-8").split("\n")[0])
        # a line inserted on top moves every line number: nothing is reused
        _write(inp, ["good new first line", *ROWS])
        teacher.fail, teacher.asked = {ROWS[0]}, []
        with pytest.raises(KDistillError, match=r"0 of 21 answers are kept"):
            label_file(cfg)
        assert "reusing 0 answers, asking the teacher for 21; 12 stored answers match no row" in capsys.readouterr().err
        # other settings are refused, not mixed; the stored answers stay for a rerun with the old ones
        with pytest.raises(KDistillError, match=r"labeled.partial.jsonl holds answers given under other settings: "
                                                r"label_names \['negative', 'positive'\] \(now \['pos', 'neg'\]\)"):
            label_file(cfg.model_copy(update={"label_names": ["pos", "neg"]}))
        assert json.loads(partial.read_text(encoding="utf-8").split("\n")[0]) == header
        # one line edited: it is asked again, the 11 unchanged answered rows are reused
        edited = ROWS[:2] + ["good after the edit"] + ROWS[3:]  # line 3 was answered 'negative' ('dull')
        _write(inp, edited)
        teacher.fail, teacher.asked = set(), []
        result = label_file(cfg)
        assert sorted(teacher.asked) == sorted(["good after the edit", *ROWS[12:]])
        assert result["reused"] == 11 and "1 stored answers match no row asked for now" in capsys.readouterr().err
        fresh = label_file(_cfg(tmp_path, srv.url, str(inp), label_names=NAMES, out=str(tmp_path / "fresh.jsonl")))
    assert _rows(out)[2] == {"text": "good after the edit", "label": "positive", "label_id": 1,
                             "probs": [0.1, 0.9], "confidence": 0.9, "teacher": srv.url}
    assert _answers(out) == _answers(fresh["out"]) and not partial.exists()
    (tmp_path / "mine.partial.jsonl").write_text("my own notes\n", encoding="utf-8")
    with pytest.raises(KDistillError, match=r"mine.partial.jsonl exists but was not written by kdistill label"):
        label_file(cfg.model_copy(update={"out": str(tmp_path / "mine.jsonl")}))
    assert (tmp_path / "mine.partial.jsonl").read_text(encoding="utf-8") == "my own notes\n"


def test_a_bad_answer_names_the_input_line_and_its_text(tmp_path: Path) -> None:
    long = "this one is neutral and the sentence keeps going well past sixty characters of text"
    inp = _write(tmp_path / "in.txt", ["a good start", "", "a bad middle", long, "good again"])

    def teach(reqs: list[dict]) -> list[str]:
        return ["neutral" if "neutral" in r["text"] else "positive" if "good" in r["text"] else "negative"
                for r in reqs]

    cfg = _cfg(tmp_path, "python:tests:teach", inp, label_names=NAMES, batch_size=2)
    with pytest.raises(KDistillError) as err:
        label_file(cfg, CallableTeacher(teach, label_names=NAMES, name="teach"))
    assert str(err.value) == (
        f"{inp} line 4 '{long[:60]}...': teacher function teach "
        "answered 'neutral', which contains no label name; label names: negative, positive; "
        f"2 of 4 answers are kept in {tmp_path / 'out' / 'labeled.partial.jsonl'}; a rerun asks the teacher only "
        "for the other 2")
    asked: list[str] = []

    def fixed(reqs: list[dict]) -> list[str]:
        asked.extend(r["text"] for r in reqs)
        return ["positive" if "good" in r["text"] else "negative" for r in reqs]

    result = label_file(cfg, CallableTeacher(fixed, label_names=NAMES))
    assert asked == [long, "good again"] and result["reused"] == 2
    assert [r["label"] for r in _rows(result["out"])] == ["positive", "negative", "negative", "positive"]
    # a pair with 3 probabilities for 2 labels: the table's line number and both texts
    pairs = _write(tmp_path / "in.tsv", ["sentence1\tsentence2", "a premise\ta good hypothesis",
                                         "another premise\tan odd hypothesis"])
    three = lambda b, n: (200, {"outputs": [{"probs": [0.2, 0.3, 0.5] if "odd" in x["text_pair"] else  # noqa: E731
                                             [0.5, 0.5]} for x in b["inputs"]]})
    with serve(three) as srv:
        with pytest.raises(KDistillError, match=r"in\.tsv line 3 'another premise / an odd hypothesis': teacher "
                                                r"endpoint .* answered 3 probs for 2 label names \(negative, pos"):
            label_file(_cfg(tmp_path, srv.url, pairs, label_names=NAMES, out=str(tmp_path / "pairs.jsonl")))


def test_a_failing_teacher_function_is_one_line_and_keeps_the_answers(tmp_path: Path) -> None:
    calls: list[int] = []

    def buggy(reqs: list[dict]) -> list[int]:
        calls.append(len(reqs))
        if len(calls) == 3:
            raise ZeroDivisionError("the user's own bug")
        return [1] * len(reqs)

    cfg = _cfg(tmp_path, "python:tests:buggy", _write(tmp_path / "in.txt", ROWS[:10]), label_names=NAMES,
               batch_size=3)
    with pytest.raises(KDistillError, match=r"line 7 .*teacher function .*buggy failed with ZeroDivisionError: "
                                            r"the user's own bug; 6 of 10 answers are kept") as err:
        label_file(cfg, CallableTeacher(buggy, label_names=NAMES))
    assert isinstance(err.value.__cause__.__cause__, ZeroDivisionError)  # the user's own error stays reachable
    calls.clear()
    result = label_file(cfg, CallableTeacher(lambda reqs: [1] * len(reqs), label_names=NAMES))
    assert (result["reused"], result["asked"], result["kept"]) == (6, 4, 10)
