"""CLI: flags are config fields, YAML and flags agree, bad input is one line and exit code 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import make_tiny_bert

from kdistill import cli
from kdistill.config import DistillConfig, EvaluateConfig, FinetuneConfig, RunConfig


def _leaf_paths(model) -> set[str]:
    return {path for path, _ in cli._leaves(model)}


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_config_field_and_section_has_exactly_one_flag(command: str) -> None:
    parser = cli.build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    dests = [a.dest for a in sub._actions if a.dest not in ("help", "config")]
    model = cli.COMMANDS[command][0]
    assert sorted(dests) == sorted(_leaf_paths(model) | set(cli._sections(model)))


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_command_prints_its_help(command: str) -> None:
    """argparse formats help text with %: a description saying "99%" must not turn --help into a traceback."""
    sub = cli.build_parser()._subparsers._group_actions[0].choices[command]
    text = sub.format_help()
    assert "--config" in text and ("99%" in text) == (command == "augment")
    assert "(see docs)" not in text and text.startswith(f"usage: kdistill {command} [-h] [--config FILE]")


def test_help_shows_real_defaults_of_lists_and_sections() -> None:
    assert cli.default_text(DistillConfig, "losses") == (
        "[{name: soft_targets, temperature: 2.0, weight: 0.5}, {name: ce, weight: 0.5}]")
    # `run`'s distill section has its own default (the main job's four terms), not DistillConfig's two
    assert cli.default_text(RunConfig, "distill.losses").count("name:") == 4
    assert cli.default_text(RunConfig, "distill.train.lr") == "0.0001"
    assert cli.default_text(DistillConfig, "extra_teachers") == "[]"
    assert cli.default_text(EvaluateConfig, "batch_sizes") == "[1, 32]"
    assert cli.default_text(DistillConfig, "teacher_answers") == "None"
    help_text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["distill"].format_help().split())
    assert "[default: [{name: soft_targets, temperature: 2.0, weight: 0.5}, {name: ce, weight: 0.5}]]" in help_text


def test_a_generic_leaf_has_no_short_form(capsys) -> None:
    """`--name fast` read as `schedule.name` confused a new user (a run name?): the full path is the only flag."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["distill", "--teacher", "t", "--name", "pid"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --name pid (did you mean --schedule.name?)" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["distill", "--teacher", "t", "--schedule.name", "pid"])
    assert cli.config_from_args("distill", args).schedule.name == "pid"


def test_unknown_flag_prints_the_command_usage_and_the_closest_field(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["distill", "--epoch", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("usage: kdistill distill ") and len(err.splitlines()) == 2, err
    assert "{finetune,distill" not in err and "Traceback" not in err  # not the top-level usage
    assert "unrecognized arguments: --epoch 1 (did you mean --epochs?)" in err
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--repeat=3", "--batch-size", "3"])
    err = capsys.readouterr().err
    assert err.startswith("usage: kdistill evaluate ")
    assert "(did you mean --repeats for --repeat, --batch-sizes for --batch-size?)" in err, err
    with pytest.raises(SystemExit):
        cli.main(["distill", "--bogus", "1"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --bogus 1;" in err and "did you mean" not in err, err  # not `--out`
    with pytest.raises(SystemExit):  # a field `run` has once per step: every step's flag, not a look-alike
        cli.main(["run", "--task", "stsb"])
    err = capsys.readouterr().err
    assert "(did you mean --finetune.data.task / --distill.data.task / --evaluate.data.task?)" in err, err
    with pytest.raises(SystemExit):
        cli.main(["run", "--train.epochs", "1"])
    assert "(did you mean --finetune.train.epochs / --distill.train.epochs?)" in capsys.readouterr().err


def test_a_whole_section_is_one_yaml_flag(tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("mapping: {strategy: bottom, group: all}\nschedule: {name: pid}\n")
    p = cli.build_parser()
    cfg = cli.config_from_args("distill", p.parse_args([
        "distill", "--config", str(yaml_file), "--mapping", "{strategy: top}",
        "--schedule", "{name: sid, epochs_per_layer: 2}", "--schedule.threshold", "0.5"]))
    assert cfg.mapping.strategy == "top" and cfg.mapping.group == "all"  # merged over the file's section
    assert (cfg.schedule.name, cfg.schedule.epochs_per_layer, cfg.schedule.threshold) == ("sid", 2, 0.5)
    run = cli.config_from_args("run", p.parse_args(["run", "--distill", "{train: {epochs: 5}}", "--mapping",
                                                    "{strategy: bottom}"]))
    assert run.distill.train.epochs == 5 and run.distill.mapping.strategy == "bottom"


def test_run_flags_keep_the_main_jobs_other_defaults() -> None:
    """`run --epochs 5` changes the epochs only: the distill section stays the main job's (four losses, lr 1e-4)."""
    default = RunConfig().distill
    for argv in (["run", "--distill.train.epochs", "5"], ["run", "--distill", "{train: {epochs: 5}}"]):
        cfg = cli.config_from_args("run", cli.build_parser().parse_args(argv)).distill
        assert cfg.train.epochs == 5
        assert cfg.losses == default.losses and cfg.train.lr == default.train.lr
        assert cfg.data.max_length == default.data.max_length == 64


@pytest.mark.parametrize(("value", "message"), [
    ("{strategy: diagonal}", "mapping.strategy: Input should be"),
    ("{stratgy: top}", "mapping.stratgy: Extra inputs are not permitted"),
    ("top", "--mapping takes a YAML mapping"),
    ("{strategy: top", "--mapping: not valid YAML at column 15"),
    ("{strategy:top}", "mapping.strategy:top: Extra inputs are not permitted (YAML needs a space after the colon: "
                       "`strategy: top`)"),
])
def test_bad_section_flag_is_one_line_naming_the_field(capsys, value: str, message: str) -> None:
    code, err = _run(capsys, ["distill", "--mapping", value])
    assert code == 2 and err.count("\n") == 1 and err.startswith("kdistill: error:") and message in err, err


def test_malformed_yaml_is_one_line_with_line_and_column(capsys, tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  epochs: 3\n  lr: [1, 2\ndata: {task: sst2}\n")
    code, err = _run(capsys, ["finetune", "--config", str(f)])
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"config file {f}, line 4, column 5: not valid YAML" in err and "line 3, column 7" in err


def test_missing_model_folder_says_so(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'runs/nothing' has the shape of a hub id; beside a 'runs' folder, or offline, it is a missing folder."""
    from huggingface_hub import constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, err = _run(capsys, ["evaluate", "--model", "runs/nothing", "--speed", "false"])
    assert code == 2 and err.count("\n") == 1 and "model folder not found: runs/nothing" in err, err
    assert "huggingface.co" not in err and "the Hugging Face Hub is offline" in err
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # online, but './runs' shows it is a path
    (tmp_path / "runs").mkdir()
    code, err = _run(capsys, ["evaluate", "--model", "runs/nothing", "--speed", "false"])
    assert code == 2 and f"model folder not found: runs/nothing (no such folder under {tmp_path})" in err, err


def test_flags_and_yaml_map_to_the_same_fields(tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("teacher: t\ntrain: {epochs: 5, lr: 0.001}\nstudent: {num_layers: 4}\n")
    args = cli.build_parser().parse_args([
        "distill", "--config", str(yaml_file), "--epochs", "2", "--task", "mrpc", "--student.layers", "[1, 3]",
        "--losses", "[{name: kl, temperature: 4}, {name: hidden_mse, weight: 2}]", "--mapping.strategy", "top",
        "--max-length", "64", "--train.seed", "7"])
    cfg = cli.config_from_args("distill", args)
    assert isinstance(cfg, DistillConfig)
    assert cfg.teacher == "t" and cfg.train.epochs == 2 and cfg.train.lr == 0.001  # flag beats YAML, YAML kept
    assert cfg.data.task == "mrpc" and cfg.student.layers == [1, 3] and cfg.student.num_layers == 4
    assert [(x.name, x.temperature, x.weight) for x in cfg.losses] == [("kl", 4.0, 1.0), ("hidden_mse", 1.0, 2.0)]
    assert cfg.mapping.strategy == "top" and cfg.data.max_length == 64 and cfg.train.seed == 7


def test_string_fields_stay_strings() -> None:
    args = cli.build_parser().parse_args(["finetune", "--model", "123", "--out", "null-dir"])
    cfg = cli.config_from_args("finetune", args)
    assert isinstance(cfg, FinetuneConfig) and cfg.model == "123" and cfg.out == "null-dir"


def test_defaults_validate() -> None:
    for model in (FinetuneConfig, DistillConfig, EvaluateConfig, RunConfig):
        model()


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    code = cli.main(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.fixture(scope="module")
def other_vocab(tmp_path_factory) -> Path:
    path = make_tiny_bert(tmp_path_factory.mktemp("other") / "m", num_layers=2)
    vocab = (path / "vocab.txt").read_text().splitlines()
    (path / "vocab.txt").write_text("\n".join(vocab[:-50]) + "\n")  # a different vocabulary
    (path / "tokenizer.json").unlink()
    return path


def test_bad_inputs_get_one_line_and_exit_2(capsys, tmp_path: Path, tiny_teacher: Path, other_vocab: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # default output folders (runs/...) must not meet a user's real runs in the clone
    t = str(tiny_teacher)
    three = tmp_path / "three.csv"
    three.write_text("text,label\n" + "".join(f"sentence {i},{i % 3}\n" for i in range(30)))
    no_col = tmp_path / "nocol.csv"
    no_col.write_text("text,target\na,1\nb,0\n")
    bare = tmp_path / "bare"
    shutil.copytree(tiny_teacher, bare)
    (bare / "config.json").write_text((bare / "config.json").read_text().replace(
        "BertForSequenceClassification", "BertModel"))
    cases = [
        (["distill", "--config", str(tmp_path / "missing.yaml")], "config file not found"),
        (["distill", "--teacher", t, "--train.epoch", "2"], None),  # argparse: unknown flag
        (["distill", "--teacher", t, "--data.task", "null", "--train_file", str(tmp_path / "x.csv")],
         "x.csv"),
        (["distill", "--teacher", t, "--data.task", "null", "--train_file", str(no_col)], "label"),
        (["distill", "--teacher", t, "--data.task", "null", "--train_file", str(three)], "3 classes"),
        (["distill", "--teacher", t, "--losses",
          "[{name: hidden_mse, mapping: {strategy: explicit, pairs: [[1, 9]]}}]"],
         "teacher layer 9"),
        (["distill", "--teacher", t, "--losses", "[{name: hiden_mse}]"], "unknown loss 'hiden_mse'"),
        (["distill", "--teacher", t, "--student.init", "path", "--student.path", str(other_vocab),
          "--losses", "[{name: hidden_mse}]"], "different vocabularies"),
        (["distill", "--teacher", str(bare)], "no classification head"),
        (["distill", "--teacher", str(tmp_path / "nope")], "not found"),
        (["distill", "--teacher", t, "--epochs", "-1"], "train.epochs"),
        (["evaluate", "--model", t, "--task", "qnli"], "unknown task 'qnli'"),
    ]
    for argv, message in cases:
        if message is None:
            with pytest.raises(SystemExit) as exc:
                cli.main(argv)
            assert exc.value.code == 2
            capsys.readouterr()
            continue
        code, err = _run(capsys, argv)
        assert code == 2, (argv, err)
        assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("kdistill: error:"), err
        assert message in err, (message, err)


def test_yaml_typo_names_the_field(capsys, tmp_path: Path) -> None:
    f = tmp_path / "typo.yaml"
    f.write_text("train:\n  epoch: 3\n")
    code, err = _run(capsys, ["finetune", "--config", str(f)])
    assert code == 2 and "train.epoch" in err and "Extra inputs" in err


def test_repeated_positional_and_bare_boolean_flags(tmp_path: Path) -> None:
    p = cli.build_parser()
    bench = cli.config_from_args("bench", p.parse_args(["bench", "--model", "a", "--model", "b", "--repeats", "3"]))
    assert bench.model == ["a", "b"] and bench.repeats == 3
    yaml_file = tmp_path / "r.yaml"
    yaml_file.write_text("runs: [x, y]\nout: o\n")
    assert cli.config_from_args("report", p.parse_args(["report", "--config", str(yaml_file)])).runs == ["x", "y"]
    report = cli.config_from_args("report", p.parse_args(["report", "r1", "r2", "--config", str(yaml_file)]))
    assert report.runs == ["r1", "r2"] and report.out == "o"  # arguments beat YAML, YAML kept
    export = cli.config_from_args("export", p.parse_args(["export", "--model", "m", "--quantize"]))
    assert export.quantize is True and export.onnx is True
    export = cli.config_from_args("export", p.parse_args(["export", "--quantize", "false"]))
    assert export.quantize is False


def test_required_fields_say_so(capsys) -> None:
    assert cli.main(["bench"]) == 2
    assert "model: Field required" in capsys.readouterr().err
    sub = cli.build_parser()._subparsers._group_actions[0].choices["bench"]
    assert "[default: required]" in sub.format_help()


def test_a_bad_value_names_the_config_file_it_came_from(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: -1\n")
    assert cli.main(["distill", "--config", str(bad)]) == 2
    assert f"invalid config {bad} (or a flag): train.lr: Input should be greater than 0" in capsys.readouterr().err
    assert cli.main(["distill", "--lr", "-1"]) == 2
    assert "invalid flags: train.lr" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "said"), [
    ("distill", "run the same command again to resume from the last checkpoint (one is saved every "
                "train.save_steps steps; before the first, it starts over)"),
    ("evaluate", "nothing was written"), ("bench --model minilm", "nothing was written")])
def test_ctrl_c_says_what_a_rerun_of_that_command_does(command: str, said: str, capsys,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from kdistill import api

    def interrupted(cfg: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(api, command.split()[0], interrupted)
    assert cli.main(command.split()) == 130
    assert capsys.readouterr().err == f"\nkdistill: interrupted; {said}\n"  # never on a progress bar's line


def test_report_without_run_folders_names_the_positional_argument(capsys) -> None:
    assert cli.main(["report", "--out", "somewhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("kdistill: error: invalid flags: no run folder given: kdistill report RUN_DIR [RUN_DIR ...] "
                   "(or `runs:` in --config)")


def test_a_command_given_nothing_says_arguments_not_config(capsys) -> None:
    # no --config and no flag: the user wrote no config, so the error must not blame one
    assert cli.main(["report"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kdistill: error: invalid arguments: no run folder given: kdistill report RUN_DIR")
