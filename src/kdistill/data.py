"""Examples for a task as `datasets.Dataset` splits (text_a[, text_b], label); `kdistill.tokenized` encodes them.

Three sources end in the same `TaskData`: a task shipped with kdistill (`kdistill.tasks.shipped`), local
CSV/TSV/JSONL files (`kdistill.tasks.readers`) or files in a task type's own format (CoNLL columns, SQuAD JSON:
`Task.read_file`), or a `datasets` name/folder. The task type (`kdistill.tasks`) reads the labels (class ids, scores,
label sets, tags per word, answer spans), encodes the examples (`Task.encode`: QA windows) and pads them into batches
(`Task.collator`). Bad input raises `KDistillError` naming the file, line or column, so the CLI can print one line
instead of a traceback from deep inside `datasets` or `csv`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from kdistill.config import DataConfig
from kdistill.errors import KDistillError
from kdistill.labels import label_key
from kdistill.tasks import Task, detect_file_task, detect_task_type, get_task
from kdistill.tasks.conll import token_rows
from kdistill.tasks.qa import dataset_splits as qa_dataset_splits
from kdistill.tasks.readers import (
    RawSplit,
    Table,
    carve_rows,
    cells_to_split,
    column_index,
    default_label_column,
    default_text_columns,
    drop_missing,
    read_table,
)
from kdistill.tasks.shipped import DATA_DIR, TASKS, TaskSpec  # noqa: F401  (TASKS, TaskSpec: public here too)


@dataclass
class TaskData:
    """Splits "train", "validation" (and "test") with columns text_a, text_b (pairs only), label.

    `task_type` names the `kdistill.tasks` type that read the labels: the label column holds class ids
    (classification), scores (regression), 0/1 rows over `label_names` (multi-label), or a tag id per word
    (token classification, whose text_a holds each sentence's words).
    """

    name: str
    label_names: list[str]
    metric: str
    is_pair: bool
    splits: dict[str, datasets.Dataset]
    task_type: str = "classification"

    @property
    def task(self) -> Task:
        """The task type: labels, losses, predictions and metrics of this data."""
        return get_task(self.task_type)

    @property
    def num_labels(self) -> int:
        """Outputs of a model's head for this data (1 for regression)."""
        return self.task.num_labels(self.label_names)


# ---------------------------------------------------------------- sources


def _own_format(cfg: DataConfig) -> Task | None:
    """The task type that reads the local files itself: `data.task_type`'s, else the one the training file's format
    evidently is (`Task.sniff`); None for tables of text and label columns."""
    if cfg.task_type is not None:
        task = get_task(cfg.task_type)
        return task if type(task).read_file is not Task.read_file else None
    kind = detect_file_task(Path(str(cfg.train_file)))
    return get_task(kind) if kind is not None else None


def _read_own(task: Task, path: Path) -> RawSplit:
    split = task.read_file(path)
    assert split is not None, f"{task.name} reads its own files"
    return split


def _from_files(cfg: DataConfig) -> tuple[dict[str, RawSplit], list[str] | None]:
    own = _own_format(cfg)
    if own is not None:
        if cfg.text_columns or cfg.label_column is not None:
            raise KDistillError(f"data.text_columns and data.label_column are for tables; {cfg.train_file} is read "
                                f"as {own.doc} in its own format: leave them unset")
        files = {"train": cfg.train_file, "validation": cfg.validation_file, "test": cfg.test_file}
        return {k: _read_own(own, Path(str(f))) for k, f in files.items() if f}, None
    text_spec = list(cfg.text_columns) if cfg.text_columns else None
    label_spec = cfg.label_column
    given = [*(text_spec or []), *([] if label_spec is None else [label_spec])]
    by_name = any(isinstance(s, str) for s in given)
    li = label_spec if isinstance(label_spec, int) else None
    table = read_table(Path(str(cfg.train_file)), cfg.header, by_name, li, set())
    if table.columns is not None:
        text_spec = text_spec or default_text_columns(table.columns, table.path)
        label_spec = default_label_column(table.columns, table.path) if label_spec is None else label_spec
    else:
        text_spec = text_spec or [0]
        if label_spec is None:
            if len(table.rows[0]) < 2:
                raise KDistillError(f"{table.path} has one column: it needs a text and a label column")
            label_spec = len(table.rows[0]) - 1
    splits = {"train": cells_to_split(table, text_spec, label_spec)}
    known = {label_key(v) for v in splits["train"].labels}
    by_name = any(isinstance(s, str) for s in [*text_spec, label_spec])
    li = label_spec if isinstance(label_spec, int) else None
    for name, path in (("validation", cfg.validation_file), ("test", cfg.test_file)):
        if path:
            t = read_table(Path(path), cfg.header, by_name, li, known)
            splits[name] = cells_to_split(t, text_spec, label_spec)
    return splits, None


def _from_dataset(cfg: DataConfig) -> tuple[dict[str, RawSplit], list[str] | None]:
    name = str(cfg.dataset)
    try:
        p = Path(name)
        if p.is_dir() and any((p / f).exists() for f in ("dataset_dict.json", "state.json")):
            obj = datasets.load_from_disk(str(p))
        else:
            obj = datasets.load_dataset(name, cfg.dataset_config)
    except Exception as err:  # noqa: BLE001 - any loader failure becomes one readable line
        msg = " ".join(str(err).split())[:300]
        raise KDistillError(f"could not load dataset {name}: {type(err).__name__}: {msg}") from None
    dsets = {"train": obj} if isinstance(obj, datasets.Dataset) else dict(obj)
    if "train" not in dsets:
        raise KDistillError(f"dataset {name} has no 'train' split (splits: {', '.join(dsets)})")
    val = next((s for s in ("validation", "dev", "valid", "val") if s in dsets), None)
    val = val or next((s for s in dsets if s.startswith("validation")), None)
    chosen = {"train": "train", "validation": val, "test": "test" if "test" in dsets else None}
    columns, where = dsets["train"].column_names, f"dataset {name}"
    if cfg.task_type == "token_classification" or (cfg.task_type is None and not cfg.text_columns
                                                    and "tokens" in columns):
        return _token_dataset(cfg, dsets, chosen, name)
    if cfg.task_type == "question_answering" or (cfg.task_type is None and not cfg.text_columns
                                                 and {"question", "context", "answers"} <= set(columns)):
        return qa_dataset_splits(dsets, chosen, name), None  # HF `squad` layout
    text_spec = list(cfg.text_columns) if cfg.text_columns else default_text_columns(columns, where)
    label_spec = default_label_column(columns, where) if cfg.label_column is None else cfg.label_column
    need = [columns[column_index(c, columns, 0, where)] for c in [*text_spec, label_spec]]
    feat = dsets["train"].features[need[-1]]
    inner = getattr(feat, "feature", None)  # a sequence of ClassLabel: multi-label ids (go_emotions' `labels`)
    names = (list(feat.names) if isinstance(feat, datasets.ClassLabel)
             else list(inner.names) if isinstance(inner, datasets.ClassLabel) else None)
    out: dict[str, RawSplit] = {}
    for ours, theirs in chosen.items():
        ds, where = dsets[theirs] if theirs else None, f"dataset {name} split '{theirs}'"
        if ds is None or len(ds) == 0:
            continue
        uniq = [ds.column_names[column_index(c, ds.column_names, 0, where)] for c in dict.fromkeys(need)]
        data = ds.select_columns(uniq)[:]
        if ours != "train" and all(not isinstance(v, list) and v == -1 for v in data[need[-1]]):
            continue  # unlabeled split (GLUE test sets carry -1, STS-B's as a score)
        rows = [list(r) for r in zip(*(data[c] for c in uniq), strict=True)]
        table = Table(where, uniq, rows, list(range(1, len(ds) + 1)))
        out[ours] = cells_to_split(table, need[:-1], need[-1])
    return out, names


def _token_dataset(cfg: DataConfig, dsets: dict[str, Any], chosen: dict[str, str | None],
                   name: str) -> tuple[dict[str, RawSplit], list[str] | None]:
    """A `datasets` split of words and tags (`tokens`, `ner_tags` as Hugging Face's conll2003) as token splits."""
    columns, where = dsets["train"].column_names, f"dataset {name}"
    text = cfg.text_columns[0] if cfg.text_columns else "tokens"
    label = cfg.label_column if cfg.label_column is not None else next(
        (c for c in ("ner_tags", "tags", "labels", "label") if c in columns), "ner_tags")
    text, label = (columns[column_index(c, columns, 0, where)] for c in (text, label))
    inner = getattr(dsets["train"].features[label], "feature", None)
    names = list(inner.names) if isinstance(inner, datasets.ClassLabel) else None
    out = {}
    for ours, theirs in chosen.items():
        ds = dsets[theirs] if theirs else None
        if ds is not None and len(ds):
            out[ours] = token_rows(f"dataset {name} split '{theirs}'", ds[text], ds[label],
                                   list(range(1, len(ds) + 1)), where="row")
    return out, names


def _from_task(spec: TaskSpec) -> dict[str, RawSplit]:
    splits = {}
    task = get_task(spec.task_type)
    for split, fname in spec.files.items():
        own = task.read_file(DATA_DIR / spec.name / fname)
        if own is not None:  # the task type's own format (CoNLL columns)
            splits[split] = own
            continue
        table = read_table(DATA_DIR / spec.name / fname, True, True, None, set())
        splits[split] = cells_to_split(table, list(spec.text_columns), spec.label_column)
    return splits


def _task_type(cfg: DataConfig, spec: TaskSpec | None, raw: dict[str, RawSplit]) -> Task:
    """`data.task_type`, else the shipped task's type, else what the files' format or training labels look like."""
    if spec is not None and cfg.task_type is not None and cfg.task_type != spec.task_type:
        raise KDistillError(f"task {spec.name} is {get_task(spec.task_type).doc}; data.task_type {cfg.task_type} "
                            "does not fit it (leave data.task_type unset)")
    kind = (cfg.task_type or (spec.task_type if spec is not None else None)
            or (detect_file_task(Path(str(cfg.train_file))) if cfg.train_file else None)
            or detect_task_type(raw["train"].labels, raw["train"].text_a,
                                [f"{raw['train'].source} line {ln}" for ln in raw["train"].lines]))
    return get_task(kind)


def scoring_files_only(cfg: DataConfig) -> bool:
    """Local validation/test files without a training file: data to score a trained model on, not to train."""
    return not cfg.train_file and not cfg.dataset and bool(cfg.validation_file or cfg.test_file)


def _scoring_as_training(cfg: DataConfig) -> DataConfig:
    """The lone test (else validation) file in the training file's place, so that the same format and label
    detection read it; a validation file given beside a test file stays the validation split."""
    first = cfg.test_file or cfg.validation_file
    second = cfg.validation_file if cfg.test_file else None
    return cfg.model_copy(update={"train_file": first, "validation_file": second, "test_file": None})


def load_task_data(cfg: DataConfig, scoring: bool = False) -> TaskData:
    """Read the configured source, let the task type read the labels, carve validation from train when there is none.

    With `scoring` (`kdistill evaluate`) local validation/test files may come without a training file: they are
    read alone, labels mapped through `data.label_names` (evaluate fills them from the model's `id2label`).

    Raises `KDistillError` (one line) for a missing file or column, a missing cell, a label the task type cannot
    read (a text score, an unknown label in a label set), a metric that does not score the task type, or
    validation/test files without a training file when not `scoring`.
    """
    spec = None
    if scoring_files_only(cfg):
        if not scoring:
            given = "data.test_file" if cfg.test_file else "data.validation_file"
            raise KDistillError(f"{given} without data.train_file: training needs data.train_file (`kdistill "
                                "evaluate` scores a model on a lone test file)")
        as_train = _scoring_as_training(cfg)
        raw, _ = _from_files(as_train)
        # "train" holds the test file: its messages must say so
        raw = drop_missing({"test" if k == "train" else k: v for k, v in raw.items()}, cfg.skip_empty)
        raw = {"train" if k == "test" else k: v for k, v in raw.items()}
        task = _task_type(as_train, None, raw)
        metric = cfg.metric or task.metrics[0]
        task.check_metric(metric)
        names, raw = task.read_labels(raw, cfg.label_names, named=bool(cfg.label_names))
        lone = raw.pop("train")
        raw = {"validation": raw.get("validation", lone), "test": lone}
        return _task_data(cfg, task, Path(str(cfg.test_file or cfg.validation_file)).stem, names, metric, raw)
    if cfg.dataset:
        raw, names = _from_dataset(cfg)
        task_name = str(cfg.dataset)
    elif cfg.train_file:
        raw, names = _from_files(cfg)
        names = cfg.label_names or names
        task_name = Path(cfg.train_file).stem
    else:
        spec = TASKS.get(str(cfg.task))
        raw, names = _from_task(spec), spec.names()
        task_name = spec.name
    raw = drop_missing(raw, cfg.skip_empty)
    task = _task_type(cfg, spec, raw)
    metric = cfg.metric or (spec.metric if spec is not None else task.metrics[0])
    task.check_metric(metric)
    names, raw = task.read_labels(raw, names, named=bool(cfg.label_names and cfg.train_file))
    if "validation" not in raw:  # carve: a seeded permutation, each side kept in file order
        n = len(raw["train"].labels)
        n_val = max(1, int(round(n * cfg.validation_fraction)))
        if n - n_val < 1:
            raise KDistillError(f"too few training examples ({n}) to carve a validation split")
        held = carve_rows(raw["train"], n_val, cfg.seed, task.carve_key)
        keep = set(held)
        raw["validation"] = raw["train"].take(held)
        raw["train"] = raw["train"].take([i for i in range(n) if i not in keep])
    return _task_data(cfg, task, task_name, names, metric, raw)


def _task_data(cfg: DataConfig, task: Task, task_name: str, names: Any, metric: str,
               raw: dict[str, RawSplit]) -> TaskData:
    is_pair = next(iter(raw.values())).text_b is not None
    feats = task.split_features(is_pair, names)
    splits = {}
    for key in [k for k in ("train", "validation", "test") if k in raw]:
        s = raw[key].take(slice(0, cfg.max_train_examples if key == "train" else cfg.max_eval_examples))
        cols = task.split_columns(s)
        cols.update(task.option_columns(cfg, len(s.labels)))
        if key == "train" and cfg.augment_file:
            _add_augmented(cols, cfg.augment_file, list(names), is_pair, task)
        splits[key] = datasets.Dataset.from_dict(cols, features=feats)
    return TaskData(task_name, list(names), metric, is_pair, splits, task.name)


def _add_augmented(cols: dict[str, list], path: str, names: list[str], is_pair: bool, task: Task) -> None:
    """Append `kdistill augment` rows (text[, text_pair] and the task's label fields) to the training columns."""
    p = Path(path)
    if not p.is_file():
        raise KDistillError(f"data.augment_file not found: {path}")
    task.check_augment()
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise KDistillError(f"{path} line {n} is not JSON") from None
            if not isinstance(row, dict) or "text" not in row or (is_pair and row.get("text_pair") is None):
                need = "'text' and 'text_pair'" if is_pair else "'text'"
                raise KDistillError(f"{path} line {n}: expected an object with {need} (a `kdistill augment` file "
                                    "of this task)")
            label = task.augment_label(row, names, f"{path} line {n}")
            cols["text_a"].append(str(row["text"]))
            if is_pair:
                cols["text_b"].append(str(row["text_pair"]))
            cols["label"].append(label)
