"""Command line: `kdistill finetune|distill|evaluate|run`. Flags are generated from the config models.

Each flag is one config field: `--train.epochs 3` sets `train.epochs`; a leaf name that is unique in
its command also works alone (`--epochs 3`). Values are read as YAML, so `--losses "[{name: kl}]"`
and `--header false` work. A whole section is one flag too: `--mapping "{strategy: top}"` is merged over the
config file's `mapping`. `--config FILE` loads YAML first; flags override it.
"""

from __future__ import annotations

import argparse
import difflib
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
    GenerateConfig,
    LabelConfig,
    MLMHeadConfig,
    ReportConfig,
    RunConfig,
    SearchConfig,
    build,
    load_yaml,
    merge_dicts,
    parse_yaml,
    with_section_defaults,
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
    "generate": (GenerateConfig, "a chat LLM teacher writes new examples of each label (imitation data, JSONL)"),
    "search": (SearchConfig, "AdaBERT: search a small convolutional student's architecture with KD"),
}


# leaves too generic to stand alone: `--name fast` reads as a run's name, not `schedule.name` (from a new-user trial)
NO_SHORT_FORM = frozenset({"name"})


def _leaves(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaves(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def _sections(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the nested config sections (`mapping`, `train`, `distill.data`, ...), parents first."""
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield f"{prefix}{name}"
            yield from _sections(ann, f"{prefix}{name}.")


def _plain(value: Any) -> Any:
    """A default as the YAML a user would type: models as mappings of their non-default fields."""
    if isinstance(value, BaseModel):
        return {k: _plain(v) for k, v in value.model_dump(mode="json", exclude_defaults=True).items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def default_text(model: type[BaseModel], path: str) -> str:
    """The default of the field at dotted `path` as `--help` shows it: 'required', a scalar, or flow YAML.

    Walks from the command's model so that a section's own default counts (`run`'s distill losses are the
    main job's four terms, not `distill`'s two).
    """
    first, *rest = path.split(".")
    field = model.model_fields[first]
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    for part in rest:  # sections are never optional (see `_leaves`), so each step is a model
        value = getattr(value, part)
    if isinstance(value, list | tuple | dict | BaseModel):
        return yaml.safe_dump(_plain(value), default_flow_style=True, width=10_000).strip()
    return str(value)


def _cli_kind(field: Any) -> str | None:
    """'append' or 'positional' where a config field asks for that command-line shape."""
    extra = field.json_schema_extra
    return extra.get("cli") if isinstance(extra, dict) else None


def _parse_value(raw: Any, field: Any, path: str = "") -> Any:
    """Strings stay strings; anything else is read as YAML (numbers, booleans, lists, mappings).

    Repeated or positional values arrive as a list of strings and stay one.
    """
    if isinstance(raw, list):
        return raw
    if field.annotation in (str, str | None) and raw not in ("null", "~"):
        return raw
    try:
        return parse_yaml(raw)
    except yaml.YAMLError as err:
        if raw.lstrip()[:1] in ("[", "{") or "twice" in str(err):  # meant as YAML: say why it is not
            problem = getattr(err, "problem", None) or "syntax error"
            raise KDistillError(f"--{path}: not valid YAML ({problem}): {raw!r}") from None
        return raw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdistill", allow_abbrev=False,
                                     description="Knowledge distillation for BERT-family encoders.")
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd, (model, help_text) in COMMANDS.items():
        leaves = list(_leaves(model))
        positional = "".join(f" [{path.upper()} ...]" for path, field in leaves if _cli_kind(field) == "positional")
        # The generated usage of ~50 flags fills a screen; an error after a typo should stay readable.
        p = sub.add_parser(cmd, help=help_text, allow_abbrev=False,
                           usage=f"kdistill {cmd} [-h] [--config FILE] [--FIELD VALUE ...]{positional}",
                           description=f"{help_text}. Every flag is one config field.")
        p.add_argument("--config", metavar="FILE", help="YAML file with the same fields; flags override it")
        counts = Counter(path.rsplit(".", 1)[-1] for path, _ in leaves)
        for path, field in leaves:
            leaf = path.rsplit(".", 1)[-1]
            kind = _cli_kind(field)
            default = default_text(model, path).replace("%", "%%")
            desc = (field.description or "").replace("%", "%%")  # argparse formats help with %
            if kind == "positional":  # e.g. `kdistill report RUN_DIR...`
                p.add_argument(path, metavar=leaf.upper(), nargs="*", default=argparse.SUPPRESS, help=desc)
                continue
            flags = [f"--{path}"]
            if "." in path and counts[leaf] == 1 and leaf not in NO_SHORT_FORM:
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
        _add_section_flags(p, model, {f for a in p._actions for f in a.option_strings})
    return parser


def _add_section_flags(p: argparse.ArgumentParser, model: type[BaseModel], taken: set[str]) -> None:
    """`--mapping "{strategy: top}"`: one flag per section, its short name too where no other flag has it."""
    sections = list(_sections(model))
    counts = Counter(path.rsplit(".", 1)[-1] for path in sections)
    for path in sections:
        short = path.rsplit(".", 1)[-1]
        flags = [f"--{path}"]
        if "." in path and counts[short] == 1 and f"--{short}" not in taken:
            flags.append(f"--{short}")
        flags += [f.replace("_", "-") for f in flags if "_" in f]
        flags = [f for f in flags if f not in taken]
        if flags:
            p.add_argument(*flags, dest=path, metavar="YAML", default=argparse.SUPPRESS,
                           help=f"the whole {path} section as one YAML mapping, merged over the config file's "
                                f"(e.g. --{path} '{{FIELD: VALUE}}'); its own flags override it")


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


def _section_value(path: str, raw: str) -> dict[str, Any]:
    """Read a section flag's YAML mapping; raises KDistillError naming the flag when it is not one."""
    example = f"e.g. --{path} '{{FIELD: VALUE}}'"
    try:
        value = parse_yaml(raw)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "syntax error"
        raise KDistillError(f"--{path}: not valid YAML{where} ({problem}); {example}") from None
    if not isinstance(value, dict):
        raise KDistillError(f"--{path} takes a YAML mapping of the section's fields, {example}; got {raw!r}")
    return value


def _get(tree: dict[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def config_from_args(command: str, args: argparse.Namespace) -> Any:
    """The validated config of `command`: the --config YAML, then section flags, then field flags.

    Raises:
        KDistillError: a config file that is missing or not YAML; a section flag that is not a mapping; any
            field that fails validation (named by its dotted path).
    """
    model, _ = COMMANDS[command]
    data = load_yaml(args.config) if getattr(args, "config", None) else {}
    given = vars(args)
    for path in _sections(model):  # parents first, so `--distill.mapping` lands on top of `--distill`
        if path in given:
            current = _get(data, path)
            current = current if isinstance(current, dict) else {}
            _set(data, path, merge_dicts(current, _section_value(path, given[path])))
    fields = dict(_leaves(model))
    for path, raw in given.items():
        if path in fields:
            _set(data, path, _parse_value(raw, fields[path], path))
    config_file = getattr(args, "config", None)
    # nothing given at all: "arguments", since the user typed neither a config file nor a flag
    source = (f"config {config_file} (or a flag)" if config_file else "flags") if data else "arguments"
    return build(model, with_section_defaults(model, data), source=source)


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    raise KeyError(command)


def unknown_flags_message(sub: argparse.ArgumentParser, extras: list[str]) -> str:
    """'unrecognized arguments: --epoch 1 (did you mean --epochs?)', suggesting the closest flag of the command, or
    every flag that ends in the one given (`run --task` -> `--finetune.data.task / --distill.data.task / ...`)."""
    # compared without the dashes, which every flag shares and would make `--bogus` look like `--out`
    known = [f[2:] for a in sub._actions for f in a.option_strings if f.startswith("--")]
    hints: list[tuple[str, str]] = []
    for arg in extras:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            name = flag.lstrip("-")
            leaf = name.rsplit(".", 1)[-1]  # `--train.epoch` may mean `--epochs`
            # `run --task x` / `run --data.task x`: the field exists once per step or section (`--finetune.data.task`,
            # `--distill.data.task`, ...): offer each, not one look-alike
            per_step = [k for k in known if k.endswith(f".{name}")]
            if per_step:
                hints.append((flag, " / ".join(f"--{k}" for k in per_step)))
                continue
            close = (difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                     or difflib.get_close_matches(leaf, known, n=1, cutoff=0.6))
            if close:
                hints.append((flag, f"--{close[0]}"))
    text = f"unrecognized arguments: {' '.join(extras)}"
    if len(hints) == 1:
        text += f" (did you mean {hints[0][1]}?)"
    elif hints:
        text += " (did you mean " + ", ".join(f"{good} for {bad}" for bad, good in hints) + "?)"
    return text + f"; `kdistill {sub.prog.split()[-1]} --help` lists every field"


def _print_summary(command: str, result: dict[str, Any]) -> None:
    if command in ("evaluate", "run"):
        from kdistill.speed import print_comparison

        print_comparison(result["model"], result.get("teacher"))
        return
    if command in ("export", "bench", "report", "label"):
        print(result["table"])
        return
    keys = ("task", "validation", "test", "retention", "params", "wall_seconds", "stages", "before", "after",
            "teacher_validation", "examples", "written", "out", "seconds", "examples_per_second", "asked",
            "reused", "kept", "rejected", "genotype", "expected_cost")
    shown = {k: result[k] for k in keys if k in result}
    print(json.dumps(shown, indent=1))


_RESUME = ("run the same command again to resume from the last checkpoint (one is saved every train.save_steps "
           "steps; before the first, it starts over)")
_AFTER_INTERRUPT = {"finetune": _RESUME, "distill": _RESUME, "run": _RESUME, "mlm-head": _RESUME, "general": _RESUME,
                    "search": "run the same command again to search from the start",
                    "label": "run the same command again: the answers already stored are reused",
                    "generate": "run the same command again: the requests already answered are reused",
                    "augment": "run the same command again to augment from the start"}
"""What a rerun after Ctrl-C does, by command; the others (evaluate, bench, export, report) write only at the end."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # argparse would print the top-level usage; the command's own usage and a hint help more
        sub = _subparser(parser, args.command)
        sub.error(unknown_flags_message(sub, extras))
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
    except OSError as err:  # a file-system refusal (disk full, permissions, a file where a folder should be)
        where = f": {err.filename}" if getattr(err, "filename", None) else ""
        print(f"kdistill: error: {err.strerror or type(err).__name__}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # a progress bar leaves the cursor at the end of its line: start the message on a fresh one
        print(f"\nkdistill: interrupted; {_AFTER_INTERRUPT.get(args.command, 'nothing was written')}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
