"""Command line: `kdistill finetune|distill|evaluate|run`. Flags are generated from the config models.

Each flag is one config field: `--train.epochs 3` sets `train.epochs`; a leaf name that is unique in
its command also works alone (`--epochs 3`). Values are read as YAML, so `--losses "[{name: kl}]"`
and `--header false` work. `--config FILE` loads YAML first; flags override it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import yaml
from pydantic import BaseModel

from kdistill.config import (
    AugmentConfig,
    BenchConfig,
    DistillConfig,
    EvaluateConfig,
    ExportConfig,
    FinetuneConfig,
    GeneralConfig,
    LabelConfig,
    MLMHeadConfig,
    ReportConfig,
    RunConfig,
    build,
    load_yaml,
)
from kdistill.errors import KDistillError, TrainingDiverged

COMMANDS: dict[str, tuple[type[BaseModel], str]] = {
    "finetune": (FinetuneConfig, "fine-tune a teacher classifier on a task"),
    "distill": (DistillConfig, "distill a student from a fine-tuned teacher"),
    "evaluate": (EvaluateConfig, "score a model; with --teacher, retention, size and speed"),
    "run": (RunConfig, "the whole job: fine-tune the teacher, distill, compare"),
    "export": (ExportConfig, "export a model to ONNX, check it against PyTorch, optionally quantise to int8"),
    "bench": (BenchConfig, "latency and throughput of models over batch sizes and lengths, PyTorch and ONNX"),
    "report": (ReportConfig, "one HTML + markdown report of one or more runs, with plots"),
    "label": (LabelConfig, "label unlabeled text with a teacher: a model, an HTTP endpoint, a command or a function"),
    "mlm-head": (MLMHeadConfig, "fit a masked-LM head onto a frozen encoder; masked-token accuracy before/after"),
    "general": (GeneralConfig, "general distillation on unlabeled text (DistilBERT triple loss or TinyBERT)"),
    "augment": (AugmentConfig, "TinyBERT word-replacement augmentation of a task's training split (JSONL)"),
}


def _leaves(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaves(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def _cli_kind(field: Any) -> str | None:
    """'append' or 'positional' where a config field asks for that command-line shape."""
    extra = field.json_schema_extra
    return extra.get("cli") if isinstance(extra, dict) else None


def _parse_value(raw: Any, field: Any) -> Any:
    """Strings stay strings; anything else is read as YAML (numbers, booleans, lists, mappings).

    Repeated or positional values arrive as a list of strings and stay one.
    """
    if isinstance(raw, list):
        return raw
    if field.annotation in (str, str | None) and raw not in ("null", "~"):
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdistill", allow_abbrev=False,
                                     description="Knowledge distillation for BERT-family encoders.")
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd, (model, help_text) in COMMANDS.items():
        p = sub.add_parser(cmd, help=help_text, allow_abbrev=False,
                           description=f"{help_text}. Every flag is one config field.")
        p.add_argument("--config", help="YAML file with the same fields; flags override it")
        leaves = list(_leaves(model))
        counts = Counter(path.rsplit(".", 1)[-1] for path, _ in leaves)
        for path, field in leaves:
            leaf = path.rsplit(".", 1)[-1]
            kind = _cli_kind(field)
            default = str("required" if field.is_required() else
                          field.default if field.default_factory is None else "(see docs)").replace("%", "%%")
            desc = (field.description or "").replace("%", "%%")  # argparse formats help with %
            if kind == "positional":  # e.g. `kdistill report RUN_DIR...`
                p.add_argument(path, metavar=leaf.upper(), nargs="*", default=argparse.SUPPRESS, help=desc)
                continue
            flags = [f"--{path}"]
            if "." in path and counts[leaf] == 1:
                flags.append(f"--{leaf}")
            flags += [f.replace("_", "-") for f in flags if "_" in f]
            extra: dict[str, Any] = {"metavar": "VALUE"}
            if kind == "append":  # `--model A --model B`
                extra["action"] = "append"
                desc += " (repeat the flag for several)"
            elif field.annotation in (bool, bool | str):  # `--onnx` alone means true
                extra["nargs"] = "?"
                extra["const"] = "true"
            p.add_argument(*flags, dest=path, default=argparse.SUPPRESS, help=f"{desc} [default: {default}]",
                           **extra)
    return parser


def _set(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = tree
    for part in parents:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[leaf] = value


def config_from_args(command: str, args: argparse.Namespace) -> Any:
    model, _ = COMMANDS[command]
    data = load_yaml(args.config) if getattr(args, "config", None) else {}
    fields = dict(_leaves(model))
    for path, raw in vars(args).items():
        if path in fields:
            _set(data, path, _parse_value(raw, fields[path]))
    return build(model, data, source="--config/flags" if data else "config")


def _print_summary(command: str, result: dict[str, Any]) -> None:
    if command in ("evaluate", "run"):
        from kdistill.speed import print_comparison

        print_comparison(result["model"], result.get("teacher"))
        return
    if command in ("export", "bench", "report", "label"):
        print(result["table"])
        return
    keys = ("task", "validation", "test", "retention", "params", "wall_seconds", "stages", "before", "after",
            "teacher_validation", "examples", "written", "out", "seconds", "examples_per_second")
    shown = {k: result[k] for k in keys if k in result}
    print(json.dumps(shown, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-file weight-loading bars; kdistill shows its own progress
    try:
        cfg = config_from_args(args.command, args)
        from kdistill import api

        result = getattr(api, args.command.replace("-", "_"))(cfg)
        if int(os.environ.get("RANK", "0")) == 0:
            _print_summary(args.command, result)
        return 0
    except TrainingDiverged as err:
        print(f"kdistill: training stopped: {err}", file=sys.stderr)
        return 1
    except KDistillError as err:
        print(f"kdistill: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdistill: interrupted; run the same command again to resume from the last checkpoint",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
