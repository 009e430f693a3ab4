"""ONNX export for serving: the model with its task head as `model.onnx`, checked against PyTorch, optionally int8.

An export is only worth shipping if ONNX Runtime says what PyTorch says, so every export is compared
on real, dynamically padded examples of several batch shapes and fails above `atol`. The dynamic
int8 copy trades accuracy for size and speed; the change in the task metric is measured, not assumed.
The graph's outputs are the task head's (`Task.output_names`): `logits` (B, C) or (B, L, C) per token, or
`start_logits` and `end_logits` of a question-answering head, compared as one stacked array.
"""

from __future__ import annotations

import inspect
import json
import logging
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from kdistill.atomic import atomic_dir, atomic_write_json
from kdistill.cache import weights_hash
from kdistill.config import DataConfig, ExportConfig, build, load_yaml
from kdistill.data import TaskData, load_task_data
from kdistill.distill.features import model_inputs, model_logits
from kdistill.errors import KDistillError
from kdistill.evaluate import stack_outputs
from kdistill.metrics import primary
from kdistill.models import load_classifier, load_tokenizer, resolve_model_path
from kdistill.outputs import check_replaceable, output_folder, save_tokenizer
from kdistill.tasks import HEADS, get_task, task_of_config
from kdistill.tokenized import make_loader, tokenize_splits

_PIP_HINT = 'pip install onnx onnxruntime onnxscript "torch==2.13.0"'
_EXTERNAL_DATA_BYTES = 1_800_000_000  # ONNX protobufs stop at 2 GB; larger weights go to model.onnx.data


def _require_onnx() -> None:
    """One clear line instead of an ImportError deep inside torch.onnx."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401  (the dynamo exporter translates with it)
    except ImportError as err:
        raise KDistillError(f"ONNX export needs onnx, onnxruntime and onnxscript ({err.name} is missing): "
                            f"{_PIP_HINT}") from None


def _model_dir(name: str) -> Path:
    path = Path(resolve_model_path(name))
    if not path.is_dir():
        raise KDistillError(f"model folder not found: {name}")
    try:
        archs = json.loads((path / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError) as err:
        raise KDistillError(f"cannot read {path / 'config.json'}: {err}") from None
    if not any(a.endswith(tuple(HEADS)) for a in archs):
        raise KDistillError(f"model '{name}' has no task head (architectures: {archs or 'none'}); only models "
                            f"ending in {', '.join(HEADS)} can be exported")
    return path


def input_names(model: PreTrainedModel) -> list[str]:
    """token_type_ids only where the forward takes it and the config has a token-type table."""
    params = inspect.signature(model.forward).parameters
    if "input_ids" not in params or "attention_mask" not in params:
        raise KDistillError(f"a {model.config.model_type} model does not take input_ids and attention_mask; "
                            "it cannot be exported as a text classifier")
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in params and getattr(model.config, "type_vocab_size", None):
        names.append("token_type_ids")
    return names


class _Logits(torch.nn.Module):
    """Positional inputs in, the head's output tensors out (`outputs`, e.g. logits): the ONNX graph's interface."""

    def __init__(self, model: PreTrainedModel, names: list[str], outputs: tuple[str, ...] = ("logits",)) -> None:
        super().__init__()
        self.model, self.names, self.outputs = model, names, outputs

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.names, inputs, strict=True)))
        tensors = tuple(getattr(out, n) for n in self.outputs)
        return tensors[0] if len(tensors) == 1 else tensors


def _example_inputs(model: PreTrainedModel, names: list[str]) -> tuple[torch.Tensor, ...]:
    """Batch 3 x 11 with padding in two rows: no size of 1 (torch.export would fix it) and real masks."""
    gen = torch.Generator().manual_seed(0)
    vocab = int(model.config.vocab_size)
    ids = torch.randint(min(100, vocab // 2), vocab, (3, 11), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    tensors = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return tuple(tensors[n] for n in names)


def _no_preprocess_hint(record: logging.LogRecord) -> bool:
    return "pre-processing before quantization" not in record.getMessage()


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Exporter and quantiser warn about torchvision ops, deprecations, pre-processing; kdistill prints its own."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)  # failures still raise, or are caught by the opset check below
    root = logging.getLogger()
    root.addFilter(_no_preprocess_hint)  # onnxruntime.quantization logs it through the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        root.removeFilter(_no_preprocess_hint)


def export_onnx(model_dir: str, out_dir: Path, *, opset: int = 18, model: PreTrainedModel | None = None) -> Path:
    """Write `out_dir/model.onnx` (dynamic batch and sequence) plus config and tokenizer files.

    Uses the dynamo exporter (torch.export + onnxscript), torch's default since 2.9: it traces
    transformers 5's mask code with symbolic shapes, so the padding mask stays a real computation
    rather than a constant from the example batch.
    """
    _require_onnx()
    path = _model_dir(model_dir)
    model = model if model is not None else load_classifier(str(path))
    model.eval()
    names = input_names(model)
    outputs = get_task(task_of_config(model.config)).output_names
    onnx_path = out_dir / "model.onnx"
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic = {"inputs": tuple({0: batch, 1: seq} for _ in names)}
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(_Logits(model, names, outputs).eval(), _example_inputs(model, names),
                                        input_names=names, output_names=list(outputs), dynamic_shapes=dynamic,
                                        opset_version=opset, dynamo=True, verbose=False)
    except Exception as err:  # the exporter's errors are pages long; the first line names the op
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise KDistillError(f"cannot export the {model.config.model_type} model in {path} to ONNX: {first}") from None
    got = program.model.opset_imports.get("", opset)
    if got != opset:  # the version converter gives up quietly, e.g. LayerNormalization has no opset < 17
        raise KDistillError(f"cannot write ONNX opset {opset} for this model (the exporter kept opset {got}); "
                            f"try --opset {got}")
    for node in program.model.graph.all_nodes():  # per-node stack traces with local paths: most of a small file
        node.metadata_props.clear()
    out_dir.mkdir(parents=True, exist_ok=True)
    program.save(str(onnx_path), external_data=weight_bytes > _EXTERNAL_DATA_BYTES)
    model.config.save_pretrained(out_dir)
    save_tokenizer(load_tokenizer(str(path)), out_dir)  # clean even when the source folder's copy is not
    return onnx_path


def onnx_session(path: str | Path, *, threads: int | None = None, device: str = "cpu") -> Any:
    """An ONNX Runtime session on CPU, or CUDA when asked and onnxruntime-gpu provides it."""
    _require_onnx()
    import onnxruntime as ort

    if not Path(path).is_file():
        raise KDistillError(f"ONNX model not found: {path}")
    available = ort.get_available_providers()
    if device == "auto":
        device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise KDistillError(f"device 'cuda' needs onnxruntime-gpu (CUDAExecutionProvider); this onnxruntime "
                            f"has {', '.join(available)}")
    if device not in ("cpu", "cuda"):
        raise KDistillError(f"unknown ONNX Runtime device '{device}' (cpu, cuda or auto)")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: ORT warns about every unused initializer
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    providers = (["CUDAExecutionProvider"] if device == "cuda" else []) + ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def onnx_logits(session: Any, batch: Mapping[str, torch.Tensor | np.ndarray]) -> np.ndarray:
    """Feed only the inputs the graph declares, as int64; missing token_type_ids are zeros (as in PyTorch).

    Returns the graph's one output, or its outputs stacked on a new last axis (start and end logits: (B, L, 2),
    as `kdistill.distill.features.model_logits` stacks them in PyTorch).
    """
    feed: dict[str, np.ndarray] = {}
    for inp in session.get_inputs():
        value = batch.get(inp.name)
        if value is None and inp.name == "token_type_ids":
            value = np.zeros_like(np.asarray(feed.get("input_ids", batch["input_ids"])))
        if value is None:
            raise KDistillError(f"the ONNX model needs input '{inp.name}', which the batch does not have")
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        feed[inp.name] = np.asarray(value).astype(np.int64, copy=False)
    outs = session.run(None, feed)
    return outs[0] if len(outs) == 1 else np.stack(outs, axis=-1)


def check_parity(model: PreTrainedModel, session: Any, batches: list[dict[str, torch.Tensor]], atol: float,
                 name: str = "ONNX Runtime") -> float:
    """Largest |logit difference| ONNX Runtime vs PyTorch over `batches`; above `atol` it is an error."""
    worst = 0.0
    model.eval()
    with torch.inference_mode():
        for batch in batches:
            inputs = model_inputs(model, batch)
            ref = model_logits(model(**inputs)).float().numpy()
            worst = max(worst, float(np.abs(onnx_logits(session, inputs) - ref).max()))
    if not worst <= atol:  # NaN fails too
        shapes = ", ".join("x".join(map(str, b["input_ids"].shape)) for b in batches)
        raise KDistillError(f"{name} and PyTorch logits differ by up to {worst:.3g} (> atol {atol:g}) on padded "
                            f"batches {shapes}; the exported model is not faithful")
    return worst


def _data_config(cfg: ExportConfig, model_dir: Path) -> DataConfig | None:
    """The data to score on: the flag, else the run's own (finetune and distill save it in kdistill.yaml)."""
    if cfg.data is not None:
        return cfg.data
    run_cfg = model_dir / "kdistill.yaml"
    data = load_yaml(run_cfg).get("data") if run_cfg.is_file() else None
    return build(DataConfig, data, source=f"data section of {run_cfg}") if isinstance(data, dict) else None


def _score(session: Any, loader: Any, data: TaskData, encoded: Any) -> dict[str, float]:
    """`data.metric` of an ONNX Runtime session's outputs on the encoded split `encoded`, scored by the data's task
    type (per-token outputs of batches of different lengths are padded as `kdistill.evaluate.stack_outputs` does)."""
    logits, labels = [], []
    for batch in loader:
        logits.append(onnx_logits(session, {k: v for k, v in batch.items() if k != "labels"}))
        labels.append(batch["labels"].numpy())
    return data.task.score(data.metric, *stack_outputs(logits, labels), encoded=encoded)


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 (QInt8 weights, activations quantised at run time): `dst`, next to nothing else needed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # no quant_pre_process: its symbolic shape inference fails on dynamo graphs; its warning is noise
    with _quiet_exporter():
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8,
                         use_external_data_format=src.with_name(src.name + ".data").is_file())
    return dst


def _file_bytes(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def _table(r: dict[str, Any]) -> str:
    q = r.get("int8")
    rows = [("file", Path(r["onnx"]).name, Path(q["path"]).name if q else "-"),
            ("size", f"{r['size_bytes'] / 1e6:.2f} MB", f"{q['size_bytes'] / 1e6:.2f} MB" if q else "-"),
            (f"max abs logit diff vs PyTorch ({r['check_examples']} {r['check_data']} examples)",
             f"{r['max_abs_diff']:.2e}", f"{q['max_abs_diff']:.2e}" if q else "-")]
    if "scores" in r:
        s = r["scores"]
        rows.append((f"{r['metric']} ({r['split']}, {r['scored_examples']} examples)", f"{s['fp32']:.4f}",
                     f"{s['int8']:.4f} ({r['change']:+.4f})"))
    lines = [f"ONNX export of {r['model']} in {r['out']}", "", "| | fp32 ONNX | int8 ONNX |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if r.get("note"):
        lines += ["", r["note"]]
    return "\n".join(lines)


def export_model(cfg: ExportConfig) -> dict[str, Any]:
    """`kdistill export`: ONNX (+ int8) copy of a model folder, parity-checked, with a markdown table.

    Raises `KDistillError` before any export work when `cfg.out` is a file, lies under one, cannot be written,
    holds the model folder, or holds files that are not an earlier export (the folder is replaced whole).
    """
    if not cfg.onnx:
        raise KDistillError("nothing to export: ONNX (--onnx) is the only format so far")
    model_dir = _model_dir(cfg.model)
    final = Path(cfg.out).expanduser() if cfg.out else model_dir / "onnx"
    # The output place is checked before the export and parity check, which take minutes on a real model; the
    # export replaces it whole, so only a new or empty folder or an earlier export is accepted.
    check_replaceable(final, model_dir, ("export.json", "model.onnx"))
    with output_folder(final):
        _require_onnx()
        model = load_classifier(str(model_dir))
        tokenizer = load_tokenizer(str(model_dir))
        print(f"[export] {model.config.model_type} model {model_dir} -> {final / 'model.onnx'} "
              f"(opset {cfg.opset})")
        # Built under a temporary name and renamed whole: a kill or a failed parity check never leaves a partial
        # or wrong model.onnx where `bench` would pick it up (an earlier export stays until the new one is complete).
        with atomic_dir(final) as out:
            result = _export_into(cfg, model_dir, model, tokenizer, out)
            result = json.loads(json.dumps(result).replace(json.dumps(str(out))[1:-1],
                                                           json.dumps(str(final))[1:-1]))
            atomic_write_json(out / "export.json", result)
    result["table"] = _table(result)
    return result


def _export_into(cfg: ExportConfig, model_dir: Path, model: Any, tokenizer: Any, out: Path) -> dict[str, Any]:
    """Export, parity-check and (with `cfg.quantize`) quantise into the folder `out`; returns the record."""
    path = export_onnx(str(model_dir), out, opset=cfg.opset, model=model)
    data_cfg = _data_config(cfg, model_dir)
    note = None
    if data_cfg is None:
        note = "no data given (--data) and no kdistill.yaml in the model folder: int8 accuracy change not scored"
        max_len = min(128, int(getattr(model.config, "max_position_embeddings", 128)))
        data_cfg = DataConfig(max_eval_examples=cfg.check_examples, max_length=max_len)  # SST-2 text for parity
    data: TaskData = load_task_data(data_cfg)
    split = cfg.split if cfg.split in data.splits else "validation"
    tokens = tokenize_splits(data, tokenizer, data_cfg.max_length, data_cfg.cache_dir)[split]
    n = min(cfg.check_examples, len(tokens))
    big = max(1, (2 * n) // 3)  # two batches of different sizes, each padded to its own longest example
    batches = list(make_loader(tokens.select(range(n)), tokenizer, big, task=data.task))
    session = onnx_session(path)
    diff = check_parity(model, session, batches, cfg.atol)  # a mismatch drops the whole temporary folder
    shapes = [list(b["input_ids"].shape) for b in batches]
    print(f"[export] ONNX Runtime matches PyTorch: max |logit diff| {diff:.2e} <= {cfg.atol:g} on batches {shapes}")
    result: dict[str, Any] = {"model": str(model_dir), "out": str(out), "onnx": str(path), "opset": cfg.opset,
                              "inputs": [i.name for i in session.get_inputs()], "size_bytes": _file_bytes(path),
                              "max_abs_diff": diff, "atol": cfg.atol, "check_examples": n, "check_shapes": shapes,
                              "check_data": f"{data.name} {split}", "weights_sha256": weights_hash(model)}
    if cfg.quantize:
        q_path = out / "model.int8.onnx"
        print(f"[export] dynamic int8 quantisation -> {q_path.name} (beside model.onnx)")
        quantize_int8(path, q_path)
        q_session = onnx_session(q_path)
        q_diff = check_parity(model, q_session, batches, float("inf"), name="int8 ONNX Runtime")  # NaN only
        result["int8"] = {"path": str(q_path), "size_bytes": _file_bytes(q_path), "max_abs_diff": q_diff}
        if note is None:
            data.task.check_model(data, model.config, str(model_dir))
            loader = make_loader(tokens, tokenizer, 64, task=data.task)
            key = primary(data.metric)
            unit = "windows" if data.task.name == "question_answering" else "examples"  # a question spans windows
            print(f"[export] scoring fp32 and int8 ONNX on {len(tokens)} {split} {unit}")
            fp32, int8 = _score(session, loader, data, tokens)[key], _score(q_session, loader, data, tokens)[key]
            # examples = the split's rows (QA: questions, each cut into one or more of the scored windows)
            result.update(metric=key, split=split, scored_examples=len(data.splits[split]),
                          scores={"fp32": fp32, "int8": int8}, change=int8 - fp32)
    if note and cfg.quantize:
        result["note"] = note
    return result
