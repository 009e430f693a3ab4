"""`--out` guards (issue 17, remaining faults): a run never writes over its inputs or over a folder that is not a
run folder, one run at a time per folder, `run` checks lengths before fine-tuning, respelled paths are the same
path, differences are named per list item, `threads` is not neutral, refused runs leave no folder, and a finished
run says so once.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdistill import api
from kdistill.cli import build_parser, main
from kdistill.config import DistillConfig, FinetuneConfig, RunConfig, build, save_config
from kdistill.errors import KDistillError
from kdistill.runfolder import (
    ABSENT,
    RESULT_NEUTRAL_FIELDS,
    check_out_guard,
    config_differences,
    describe_difference,
)
from kdistill.runlock import LOCK_FILE, acquire, is_held

ROOT = Path(__file__).resolve().parents[1]
LOSSES = [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}, {"name": "hidden_mse"}]


def _cfg(teacher: Path | str, out: Path | str, tiny_data: dict, fast_train: dict, **fields) -> DistillConfig:
    data = {"teacher": str(teacher), "student": {"num_layers": 2}, "data": tiny_data, "train": fast_train,
            "losses": LOSSES, "out": str(out)}
    return build(DistillConfig, {**data, **fields})


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def _copy_teacher(tiny_teacher: Path, dest: Path) -> Path:
    shutil.copytree(tiny_teacher, dest)
    return dest


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, tiny_teacher: Path) -> DistillConfig:
    """One finished tiny distillation."""
    data = {"task": "sst2", "max_train_examples": 96, "max_eval_examples": 48, "max_length": 32}
    train = {"epochs": 1, "batch_size": 16, "eval_batch_size": 32, "lr": 1e-3, "progress": False,
             "save_steps": 1000, "device": "cpu"}
    cfg = _cfg(tiny_teacher, tmp_path_factory.mktemp("done") / "student", data, train)
    api.distill(cfg)
    return cfg


# ---------------------------------------------------------------- item 1: out must not be an input or a model folder


def test_out_equal_to_the_teacher_is_refused_before_anything_is_written(tiny_teacher: Path, tmp_path: Path,
                                                                         tiny_data: dict, fast_train: dict,
                                                                         capsys: pytest.CaptureFixture) -> None:
    teacher = _copy_teacher(tiny_teacher, tmp_path / "runs" / "teacher")
    before = _listing(teacher)
    for out in ("runs/teacher", str(teacher), "./runs/teacher/", "runs/../runs/teacher"):
        for resume in ("true", "false"):
            code = main(["distill", "--teacher", "runs/teacher", "--out", out, "--resume", resume,
                         "--task", "sst2", "--max_train_examples", "32", "--device", "cpu", "--progress", "false"])
            err = capsys.readouterr().err.strip()
            assert code == 2, err
            assert err.startswith(f"kdistill: error: out {Path(out)} is the teacher folder (teacher: runs/teacher)")
            assert "choose another --out" in err and "\n" not in err
    assert _listing(teacher) == before  # nothing written, not even a lock file


def test_out_equal_to_student_path_or_extra_teacher_or_finetune_model_is_refused(
        tiny_teacher: Path, tmp_path: Path, tiny_data: dict, fast_train: dict) -> None:
    teacher = _copy_teacher(tiny_teacher, tmp_path / "t")
    before = _listing(teacher)
    with pytest.raises(KDistillError, match=r"is the student folder \(student.path: "):
        api.distill(_cfg(tiny_teacher, teacher, tiny_data, fast_train, student={"init": "path", "path": str(teacher)}))
    with pytest.raises(KDistillError, match=r"is the teacher folder \(extra_teachers: "):
        api.distill(_cfg(tiny_teacher, f"{teacher}/", tiny_data, fast_train, extra_teachers=[str(teacher)]))
    ft = build(FinetuneConfig, {"model": "t", "out": str(teacher), "data": tiny_data,
                                "train": {**fast_train, "resume": False}})
    with pytest.raises(KDistillError, match=r"out .* is the model folder \(model: t\)"):
        api.finetune(ft)
    assert _listing(teacher) == before


def test_a_folder_with_model_files_that_is_no_run_folder_is_refused(tiny_teacher: Path, tmp_path: Path,
                                                                    tiny_data: dict, fast_train: dict,
                                                                    capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "README.md").write_text("my project\n")
    (tmp_path / "notes.txt").write_text("mine\n")
    save_config(_cfg(tiny_teacher, ".", tiny_data, fast_train), tmp_path / "c.yaml")
    assert main(["distill", "--config", "c.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("kdistill: error: out . is not a kdistill run folder (no kdistill.yaml) but holds README.md, which "
                   "this run would overwrite: choose another --out (a new or empty folder)")
    assert (tmp_path / "README.md").read_text() == "my project\n"
    assert not (tmp_path / LOCK_FILE).exists() and not (tmp_path / "logs").exists()
    model = _copy_teacher(tiny_teacher, tmp_path / "downloaded")
    with pytest.raises(KDistillError, match=r"holds config.json, model.safetensors, tokenizer.json, "
                                            r"tokenizer_config.json, vocab.txt, which"):
        check_out_guard(model, _cfg(tiny_teacher, model, tiny_data, fast_train))
    # other files are no obstacle, and neither is a kdistill run folder's own model card
    check_out_guard(tmp_path / "elsewhere", _cfg(tiny_teacher, tmp_path / "elsewhere", tiny_data, fast_train))
    (tmp_path / "README.md").unlink()
    check_out_guard(tmp_path, _cfg(tiny_teacher, tmp_path, tiny_data, fast_train))


def test_a_run_folder_of_another_command_is_not_resumed(tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                                        fast_train: dict) -> None:
    ft = build(FinetuneConfig, {"model": str(tiny_teacher), "out": str(tmp_path / "ft"), "data": tiny_data,
                                "train": fast_train})
    api.finetune(ft)
    before = _listing(tmp_path / "ft")
    with pytest.raises(KDistillError, match=r"holds a `kdistill finetune` run, which this `kdistill distill` cannot"):
        api.distill(_cfg(tiny_teacher, tmp_path / "ft", tiny_data, fast_train))
    with pytest.raises(KDistillError, match="is the teacher folder"):  # and it is the teacher here: not even fresh
        api.distill(_cfg(tmp_path / "ft", tmp_path / "ft", tiny_data, {**fast_train, "resume": False}))
    assert _listing(tmp_path / "ft") == before


# ---------------------------------------------------------------- item 2: one run per folder


def test_a_folder_locked_by_another_process_is_refused_until_that_process_dies(
        tiny_teacher: Path, tmp_path: Path, tiny_data: dict, fast_train: dict, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom kdistill.runlock import acquire\nacquire(sys.argv[1])\n"
         "print('locked', flush=True)\ntime.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(KDistillError, match=rf"busy is in use by another kdistill run \(pid {holder.pid}\)"):
            api.distill(_cfg(tiny_teacher, out, tiny_data, fast_train))
        save_config(_cfg(tiny_teacher, out, tiny_data, fast_train), tmp_path / "c.yaml")
        assert main(["distill", "--config", str(tmp_path / "c.yaml")]) == 2
        assert capsys.readouterr().err.strip() == (f"kdistill: error: {out} is in use by another kdistill run (pid "
                                                   f"{holder.pid}); wait for it to end, or choose another --out")
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]  # refused before anything was written
    finally:
        holder.kill()  # as kill -9: no clean-up runs in the holder
        holder.wait()
    assert (out / LOCK_FILE).exists()  # the dead holder's file stays, but its lock died with it
    lock = acquire(out)
    assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())
    lock.release()
    assert not (out / LOCK_FILE).exists() and out.is_dir()


def test_a_second_lock_in_this_process_or_thread_conflicts(tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                                           fast_train: dict) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file description: a lock of its own
        os.write(fd, b"4242\n")
        with pytest.raises(KDistillError, match=r"^busy is in use by another kdistill run \(pid 4242\)"):
            api.distill(_cfg(tiny_teacher, "busy", tiny_data, fast_train))  # named as spelled (cwd is tmp_path)
    finally:
        os.close(fd)
    errors: list[str] = []
    lock = acquire(out)
    try:
        def other_thread() -> None:
            try:
                acquire(out)
            except KDistillError as err:
                errors.append(str(err))

        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        assert len(errors) == 1 and "in use by another kdistill run in this process" in errors[0]
        again = acquire(out)  # the same thread again: re-entrant (a multi-stage run's last stage)
        again.release()
        assert is_held(out) and (out / LOCK_FILE).exists()
    finally:
        lock.release()
    assert not is_held(out) and not (out / LOCK_FILE).exists()


def test_a_staged_run_holds_its_folder_throughout_without_refusing_itself(tiny_teacher: Path, tmp_path: Path,
                                                                          tiny_data: dict, fast_train: dict) -> None:
    out = tmp_path / "staged"
    stages = [{"name": "inter", "epochs": 1, "losses": [{"name": "hidden_mse"}]},
              {"name": "pred", "epochs": 1, "losses": [{"name": "kl"}]}]
    blocked: dict[str, bool] = {}

    def probe_locks(d) -> None:
        for folder in (out, d.out):
            fd = os.open(folder / LOCK_FILE, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                blocked[str(folder)] = False
            except BlockingIOError:
                blocked.setdefault(str(folder), True)
            finally:
                os.close(fd)

    small = {**tiny_data, "max_train_examples": 32, "max_eval_examples": 16}
    summary = api.distill(_cfg(tiny_teacher, out, small, fast_train, stages=stages), callbacks=[probe_locks])
    assert [s["stage"] for s in summary["stages"]] == ["inter", "pred"]
    assert blocked == {str(out): True, str(out / "stages" / "1-inter"): True}
    assert not list(out.rglob(LOCK_FILE))


# ---------------------------------------------------------------- item 3: `run` checks lengths before fine-tuning


def _short_student(folder: Path, positions: int) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    BertForSequenceClassification(BertConfig(vocab_size=700, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=32, max_position_embeddings=positions)).save_pretrained(
        folder)
    return folder


def test_run_checks_distill_and_evaluate_lengths_before_fine_tuning(tiny_teacher: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    base = ["run", "--finetune.model", str(tiny_teacher), "--finetune.out", "t", "--distill.out", "s",
            "--finetune.train.device", "cpu"]
    cases = [(["--distill.data.max_length", "600"], "distill.data.max_length 600 is longer than the teacher 't, "
              "fine-tuned from", "--distill.data.max_length 128"),
             (["--evaluate.data.max_length", "300"], "evaluate.data.max_length 300 is longer than the teacher",
              "--evaluate.data.max_length 128"),
             (["--finetune.data.max_length", "200"], "finetune.data.max_length 200 is longer than the model",
              "--finetune.data.max_length 128"),
             (["--distill.student", f"{{init: path, path: {_short_student(tmp_path / 'short', 40)}}}"],
              "distill.data.max_length 64 is longer than the student", "--distill.data.max_length 40")]
    for extra, message, hint in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.endswith(f"set {hint} or less"), err
        flag = hint.split()[0]
        assert build_parser().parse_known_args(["run", flag, "32"])[1] == []  # the flag named is one `run` takes
        assert not (tmp_path / "t").exists() and not (tmp_path / "s").exists()  # no fine-tuning started
    with pytest.raises(KDistillError, match=r"model folder not found: \./nowhere"):  # a bad student path, too
        api.run(build(RunConfig, {"finetune": {"model": str(tiny_teacher), "out": "t"},
                                  "distill": {"out": "s", "student": {"init": "path", "path": "./nowhere"}}}))
    with pytest.raises(KDistillError, match=r"out s is the teacher folder \(teacher: s\)"):
        api.run(build(RunConfig, {"finetune": {"model": str(tiny_teacher), "out": "s"}, "distill": {"out": "./s"}}))
    assert not (tmp_path / "t").exists() and not (tmp_path / "s").exists()


def test_run_refuses_steps_of_different_task_types_before_fine_tuning(tiny_teacher: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    base = ["run", "--finetune.model", str(tiny_teacher), "--finetune.out", "t", "--distill.out", "s",
            "--finetune.train.device", "cpu"]
    assert main([*base, "--finetune.data.task", "conll2003"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--finetune.data is conll2003 (token_classification), --distill.data is sst2 (classification)" in err
    assert err.count("\n") == 0 and not (tmp_path / "t").exists()  # one line, and no fine-tuning started
    assert main([*base, "--distill.data.task_type", "regression"]) == 2
    assert "--finetune.data is sst2 (classification), --distill.data is regression, " in capsys.readouterr().err
    with pytest.raises(KDistillError, match="model folder"):  # same task type, tasks differ: past this check
        api.run(build(RunConfig, {"finetune": {"model": str(tmp_path / "absent"), "out": "t"},
                                  "distill": {"out": "s", "data": {"task": "mrpc"}}}))
    for step in ("distill", "evaluate"):  # QA's window option on a classification step: refused before any step
        assert main([*base, f"--{step}.data.doc_stride", "32"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"--{step}.data.doc_stride applies to question answering only; --{step}.data is sst2" in err
        assert err.count("\n") == 0 and not (tmp_path / "t").exists()


# ---------------------------------------------------------------- items 4, 5, 6: comparing configs


def test_paths_spelled_differently_are_the_same_path(tmp_path: Path) -> None:
    (tmp_path / "runs" / "t").mkdir(parents=True)
    (tmp_path / "d.tsv").write_text("x\n")
    run = {"teacher": "runs/t", "out": "runs/s", "student": {"path": None},
           "data": {"train_file": "d.tsv", "dataset": "runs/t"}, "extra_teachers": ["runs/t"]}
    now = {"teacher": str(tmp_path / "runs" / "t") + "/", "out": "./runs/s/", "student": {"path": None},
           "data": {"train_file": "./d.tsv", "dataset": "./runs/t/"}, "extra_teachers": ["./runs//t"]}
    assert config_differences(run, now) == []
    moved = {**now, "teacher": "runs/other", "data": {"train_file": "e.tsv", "dataset": "runs/t"}}
    assert [k for k, _, _ in config_differences(run, moved)] == ["teacher", "data.train_file"]
    assert config_differences({"data": {"task": "sst2"}}, {"data": {"task": "./sst2"}}) != []  # not a path


@pytest.fixture
def interrupted(tiny_teacher: Path, tmp_path: Path, tiny_data: dict, fast_train: dict) -> DistillConfig:
    teacher = _copy_teacher(tiny_teacher, tmp_path / "runs" / "t")
    cfg = _cfg("runs/t", "runs/s", tiny_data, {**fast_train, "save_steps": 2})

    def stop(d) -> None:
        if d.state.global_step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.distill(cfg, callbacks=[stop])
    assert teacher.is_dir()
    return cfg


def test_a_resume_with_respelled_paths_resumes_and_names_list_items_that_differ(
        interrupted: DistillConfig, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    losses = [dict(loss) for loss in LOSSES]
    losses[1]["weight"] = 2.0
    changed = interrupted.model_copy(update={"losses": build(DistillConfig, {"losses": losses}).losses})
    with pytest.raises(KDistillError) as err:
        api.distill(changed)
    assert "(losses[1].weight: 0.5 (run) -> 2.0 (now));" in str(err.value)
    fewer = interrupted.model_copy(update={"losses": interrupted.losses[:2], "out": "./runs/s/"})
    with pytest.raises(KDistillError, match=r"\(losses\[2\]: removed, was \{name: hidden_mse, weight: 1.0, "
                                            r"temperature: 1.0, mapping: null, params: \{\}\} \(run\)\)"):
        api.distill(fewer)
    other = _copy_teacher(tmp_path / "runs" / "t", tmp_path / "elsewhere")
    with pytest.raises(KDistillError, match=rf"teacher: runs/t \(run\) -> {other} \(now\)"):
        api.distill(interrupted.model_copy(update={"teacher": str(other)}))
    respelled = interrupted.model_copy(update={"teacher": str(tmp_path / "runs" / "t") + "/", "out": "./runs/s/"})
    capsys.readouterr()
    summary = api.distill(respelled)
    assert "resumed from step-0000002" in capsys.readouterr().out
    assert summary["steps"] == 6


def test_list_differences_per_item_and_subfield() -> None:
    stage = {"name": "a", "epochs": 1, "losses": [{"name": "kl", "weight": 1.0}]}
    run = {"losses": [{"name": "kl", "weight": 1.0, "params": {}}], "stages": [stage],
           "train": {"threads": None, "log_every": 10}}
    now = {"losses": [{"name": "kl", "weight": 2.0, "params": {"p": 2}}, {"name": "ce", "weight": 1.0}],
           "stages": [{**stage, "losses": [{"name": "kl", "weight": 0.5}]}],
           "train": {"threads": 4, "log_every": 1}}
    diffs = config_differences(run, now)
    assert [describe_difference(*d) for d in diffs] == [
        "losses[0].weight: 1.0 (run) -> 2.0 (now)",
        "losses[0].params: {} (run) -> {p: 2} (now)",
        "losses[1]: added {name: ce, weight: 1.0} (now)",
        "stages[0].losses[0].weight: 1.0 (run) -> 0.5 (now)",
        "train.threads: null (run) -> 4 (now)",  # the thread count changes float sums, so the weights: not neutral
    ]
    assert diffs[2][1] is ABSENT
    assert "train.threads" not in RESULT_NEUTRAL_FIELDS and "train.eval_batch_size" in RESULT_NEUTRAL_FIELDS


def test_neutral_fields_leave_the_weights_bit_identical(finished: DistillConfig, tmp_path: Path) -> None:
    train = finished.train.model_copy(update={"log_every": 1, "save_steps": 4, "keep_checkpoints": 3,
                                              "eval_batch_size": 7, "progress": True})
    data = finished.data.model_copy(update={"cache_dir": str(tmp_path / "cache")})
    other = finished.model_copy(update={"train": train, "data": data, "out": str(tmp_path / "other")})
    assert [k for k, _, _ in config_differences(finished.model_dump(mode="json"), other.model_dump(mode="json"))] == []
    api.distill(other)
    a = load_file(str(Path(finished.out) / "model.safetensors"))
    b = load_file(str(tmp_path / "other" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- item 7: a refused run leaves no folder behind


def test_a_run_refused_at_set_up_removes_the_folders_it_created(tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                                                fast_train: dict) -> None:
    refused = [{"student": {"init": "path", "path": str(tmp_path / "nowhere")}},
               {"data": {**tiny_data, "max_length": 600}},
               {"teacher_answers": str(tmp_path / "missing.jsonl"), "losses": [{"name": "kl"}]},
               {"student": {"init": "path", "path": str(tmp_path / "nowhere")},
                "stages": [{"name": "one", "losses": [{"name": "hidden_mse"}]},
                           {"name": "two", "losses": [{"name": "kl"}]}]}]
    for fields in refused:
        with pytest.raises(KDistillError):
            api.distill(_cfg(tiny_teacher, tmp_path / "new" / "deeper" / "out", tiny_data, fast_train, **fields))
        assert not (tmp_path / "new").exists(), fields
    (tmp_path / "mine").mkdir()
    with pytest.raises(KDistillError):
        api.distill(_cfg(tiny_teacher, tmp_path / "mine", tiny_data, fast_train, **refused[0]))
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())  # it was there before: kept
    ft = build(FinetuneConfig, {"model": str(tiny_teacher), "out": str(tmp_path / "ft"), "train": fast_train,
                                "data": {**tiny_data, "max_length": 1000}})
    with pytest.raises(KDistillError, match="data.max_length 1000"):
        api.finetune(ft)
    assert not (tmp_path / "ft").exists()


# ---------------------------------------------------------------- item 8: "already finished" once


def test_a_finished_run_rerun_says_so_once(finished: DistillConfig, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    summary = api.distill(finished)
    out = capsys.readouterr().out
    assert out.count("already finished; nothing to do") == 1, out
    assert "test" in summary


def test_run_reuses_a_teacher_only_when_it_was_fine_tuned_with_the_same_config(tiny_teacher: Path,
                                                                               tmp_path: Path) -> None:
    data = {"task": "sst2", "max_train_examples": 32, "max_eval_examples": 16, "max_length": 32}
    train = {"epochs": 1, "batch_size": 16, "lr": 1e-3, "progress": False, "device": "cpu"}
    ft = {"model": str(tiny_teacher), "out": str(tmp_path / "t"), "data": data, "train": train}
    api.finetune(build(FinetuneConfig, ft))
    before = _listing(tmp_path / "t")
    changed = build(RunConfig, {"finetune": {**ft, "train": {**train, "lr": 0.5, "epochs": 7}},
                                "distill": {"out": str(tmp_path / "s")}})
    with pytest.raises(KDistillError, match=r"holds a teacher fine-tuned with another config \(.*train\.epochs: 1\.0 "
                                            r"\(run\) -> 7\.0 \(now\).*--finetune\.train\.resume false"):
        api.run(changed)
    assert _listing(tmp_path / "t") == before and not (tmp_path / "s").exists()
    same = build(RunConfig, {"finetune": ft, "distill": {"out": str(tmp_path / "s")}})
    assert api.reusable_teacher(same)
