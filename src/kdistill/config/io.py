"""Reading and writing configs: YAML in (one-line errors naming file, line and field), validation, merging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from kdistill.atomic import atomic_write_text
from kdistill.config.base import StrictConfig
from kdistill.config.presets import PRESETS
from kdistill.errors import KDistillError


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the dotted field path."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"] if not str(x).startswith("function-after"))
        loc = f"{prefix}{loc}" if loc else prefix.rstrip(".")  # a whole-config check names no field
        msg = e["msg"].removeprefix("Value error, ")
        key = str(e["loc"][-1]) if e["loc"] else ""
        if e["type"] == "extra_forbidden" and ":" in key:  # YAML reads `{name:kl}` as one key "name:kl"
            field, _, value = key.partition(":")
            msg += f" (YAML needs a space after the colon: `{field}: {value}`)"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def build(model_cls: type[StrictConfig], data: dict[str, Any], source: str = "config") -> Any:
    """Validate a dict into a config model, turning pydantic errors into one KDistillError line."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as err:
        raise KDistillError(f"invalid {source}: {format_validation_error(err)}") from None


class UniqueKeyLoader(yaml.SafeLoader):
    """safe_load's loader, except that a key given twice in one mapping is an error: PyYAML keeps the last one
    silently, so `losses:` written twice would drop the first list without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key '{key}' is given twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """`yaml.safe_load` that refuses duplicate keys (raises yaml.YAMLError, like safe_load's own errors)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with safe_load (no tags that execute code)."""
    p = Path(path)
    if p.is_dir():
        raise KDistillError(f"config file {p} is a folder, not a YAML file")
    if not p.is_file():
        raise KDistillError(f"config file not found: {p}")
    try:
        data = parse_yaml(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise KDistillError(f"config file {p} is not UTF-8 text") from None
    except yaml.YAMLError as err:
        raise KDistillError(yaml_error_line(p, err)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KDistillError(f"config file {p} must hold a mapping of fields, got {type(data).__name__}")
    return data


def yaml_error_line(path: str | Path, err: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: file, line and column (1-based), the problem, and where its context began.

    PyYAML's own message spans several lines with source excerpts and carets.
    """
    mark = getattr(err, "problem_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    text = f"config file {where}: not valid YAML: {problem}"
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and context_mark is not None:
        text += f" ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
    return text


def merge_dicts(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid on `base`, recursively for nested mappings; lists and scalars are replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge_dicts(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def with_section_defaults(model_cls: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """`data` with each given section laid over that section's own default, not its class's bare defaults.

    `RunConfig.distill` defaults to the main job's student (four loss terms, lr 1e-4, 2 epochs); without this,
    `run` given only `distill: {train: {epochs: 5}}` would validate a plain `DistillConfig` and silently drop the
    main job's losses and learning rate.
    """
    out = dict(data)
    for name, field in model_cls.model_fields.items():
        ann = field.annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)) or not isinstance(out.get(name), dict):
            continue
        default = field.get_default(call_default_factory=True) if field.default_factory is not None else None
        base = default.model_dump(mode="json", exclude_defaults=True) if isinstance(default, BaseModel) else {}
        preset = out[name].get("preset")
        if isinstance(preset, str) and preset in PRESETS:  # the preset's recipe, not the section default's
            base = {k: v for k, v in base.items() if k not in (*PRESETS[preset], "losses", "stages")}
        out[name] = with_section_defaults(ann, merge_dicts(base, out[name]))
    return out


def load_config(model_cls: type[StrictConfig], path: str | Path) -> Any:
    """Load a YAML file into `model_cls`, e.g. `load_config(DistillConfig, 'configs/sst2.yaml')`.

    Raises:
        KDistillError: the file is missing, not UTF-8, not YAML (one line: file, line, column) or not a mapping;
            a field fails validation (named by its dotted path).
    """
    return build(model_cls, with_section_defaults(model_cls, load_yaml(path)), source=f"config {path}")


def save_config(cfg: BaseModel, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
