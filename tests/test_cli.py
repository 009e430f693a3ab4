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
def test_every_config_field_has_exactly_one_flag(command: str) -> None:
    parser = cli.build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    dests = [a.dest for a in sub._actions if a.dest not in ("help", "config")]
    assert sorted(dests) == sorted(_leaf_paths(cli.COMMANDS[command][0]))


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_command_prints_its_help(command: str) -> None:
    """argparse formats help text with %: a description saying "99%" must not turn --help into a traceback."""
    sub = cli.build_parser()._subparsers._group_actions[0].choices[command]
    text = sub.format_help()
    assert "--config" in text and ("99%" in text) == (command == "augment")


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


def test_bad_inputs_get_one_line_and_exit_2(capsys, tmp_path: Path, tiny_teacher: Path, other_vocab: Path) -> None:
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
    assert cli.main(["report"]) == 2
    assert "runs: Field required" in capsys.readouterr().err
    sub = cli.build_parser()._subparsers._group_actions[0].choices["bench"]
    assert "[default: required]" in sub.format_help()
