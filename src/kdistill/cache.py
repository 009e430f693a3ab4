"""Teacher-output cache: run the frozen teacher once over the training split, then read its outputs from disk.

Why: the teacher gives the same answer every epoch (eval mode, no dropout), and its forward pass is a large
share of a distillation step. The cache stores per training example, unpadded, the logits (float32) and the
features the objective asks for (hidden states, attention scores or probabilities; float16 by default), in
safetensors shards read through memory maps, plus a `manifest.json`. The logits of a per-token task (NER, QA)
are stored for every real token of the example, (n_tokens, C) rows, like the hidden states (`logits_per_token` in
the manifest); the `Task` picks the labelled rows when the losses compare them.

A cache folder is named by a fingerprint of everything its contents depend on: the teacher's weights and
config, the tokenizer, the training texts and their token ids, max_length, the stored features, their dtype
and the format version. A cache that does not match is never used: under a cache root a matching one is
built next to it, and a cache folder named directly must match or the run stops with the parts that differ.

A cache is built in a hidden temporary folder beside its final one (`.FINGERPRINT.tmp-HOST-PID`) and renamed
whole. The build removes its own temporary folder however it ends; one left by a killed build is removed by the
next build or reuse in that root (`remove_stale_builds`), once its process is known to be gone.

This module writes caches and decides which one serves a run; `kdistill.teachers.cached` reads one as a teacher.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding

from kdistill.atomic import atomic_write_json, kill_point, usual_modes
from kdistill.distill.features import FeatureRequest, forward_features
from kdistill.errors import KDistillError
from kdistill.tokenized import split_hash, tokenizer_hash

FORMAT = 1  # bump when the layout changes, so old caches are rebuilt rather than misread
MANIFEST = "manifest.json"
SHARD_BYTES = 256 * 2**20
KINDS = ("hidden", "attn_scores", "attn_probs")
PARTS = {"format": "cache format", "teacher_weights": "teacher weights", "teacher_config": "teacher config",
         "tokenizer": "tokenizer", "data": "training data", "tokens": "token ids", "max_length": "max_length"}
DTYPES = {"float16": torch.float16, "float32": torch.float32}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def weights_hash(model: nn.Module) -> str:
    """Hash of every tensor's name, dtype, shape and bytes: the same weights loaded from anywhere match."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _config_hash(model: nn.Module) -> str:
    """The teacher's config minus where it was loaded from and which attention kernel computes it."""
    cfg = {k: v for k, v in model.config.to_dict().items()
           if not k.startswith("_") and k not in ("transformers_version", "name_or_path", "attn_implementation")}
    return _sha(json.dumps(cfg, sort_keys=True, default=str).encode())


def _tokens_hash(ds: Dataset) -> str:
    h = hashlib.sha256()
    cols = sorted(c for c in ds.column_names if c not in ("labels", "idx"))
    h.update(json.dumps(cols).encode())
    for start in range(0, len(ds), 10_000):
        part = ds[start:start + 10_000]
        for c in cols:
            h.update(json.dumps(part[c]).encode())
    return h.hexdigest()


def _request_dict(request: FeatureRequest) -> dict[str, list[int]]:
    return {k: sorted(getattr(request, k)) for k in KINDS}


def _fingerprint(parts: Mapping[str, Any], request: Mapping[str, list[int]], dtype: str) -> str:
    body = json.dumps({"parts": dict(parts), "request": dict(request), "dtype": dtype}, sort_keys=True)
    return _sha(body.encode())[:20]


@dataclass(frozen=True)
class CacheSpec:
    """What a run needs from a cache: whose outputs (`parts`), which features, in which dtype."""

    parts: dict[str, Any]
    request: FeatureRequest
    dtype: str

    @property
    def stored_dtype(self) -> str:
        return self.dtype if self.request else "none"  # logits are float32 whatever the feature dtype

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self.parts, _request_dict(self.request), self.stored_dtype)


def cache_spec(teacher: nn.Module, tokenizer: Any, raw_train: Dataset, train: Dataset, max_length: int,
               request: FeatureRequest, dtype: str = "float16") -> CacheSpec:
    """Fingerprint parts of a run: `raw_train` is the text split, `train` its tokenised form."""
    if dtype not in DTYPES:
        raise KDistillError(f"teacher cache dtype must be one of {list(DTYPES)}, not {dtype!r}")
    if request.qkv:  # queries/keys/values are not among the stored features (KINDS)
        raise KDistillError("the teacher cache does not store queries, keys and values: the relation losses "
                            "(value_relation, minilmv2_relations) need teacher_cache: false")
    parts = {"format": FORMAT, "teacher_weights": weights_hash(teacher), "teacher_config": _config_hash(teacher),
             "tokenizer": tokenizer_hash(tokenizer), "data": split_hash(raw_train), "tokens": _tokens_hash(train),
             "max_length": max_length}
    return CacheSpec(parts, request, dtype)


def read_manifest(folder: Path) -> dict[str, Any]:
    """A cache folder's `manifest.json` as a mapping; unreadable or not a mapping is one KDistillError line."""
    try:
        man = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise KDistillError(f"teacher cache {folder}: unreadable {MANIFEST} ({err})") from None
    if not isinstance(man, dict):
        raise KDistillError(f"teacher cache {folder}: {MANIFEST} is not a mapping")
    return man


def _damage(folder: Path, man: dict[str, Any]) -> str | None:
    """Why a folder cannot be trusted as the cache its manifest describes, or None."""
    try:
        if man.get("format") != FORMAT:
            return f"format {man.get('format')} (this version reads {FORMAT})"
        if _fingerprint(man["parts"], man["request"], man["dtype"]) != man["fingerprint"]:
            return "its manifest does not hash to its fingerprint (edited by hand?)"
        if folder.name != man["fingerprint"]:
            return f"its folder name is not its fingerprint {man['fingerprint']}"
        start = 0
        for sh in man["shards"]:
            f = folder / sh["file"]
            if sh["start"] != start or not f.is_file() or f.stat().st_size != sh["bytes"]:
                return f"shard {sh['file']} is missing, truncated or out of order"
            start = sh["stop"]
        if start != man["num_examples"]:
            return f"its shards hold {start} examples, the manifest says {man['num_examples']}"
    except (KeyError, TypeError) as err:
        return f"its manifest lacks {err}"
    return None


def _mismatch(man: dict[str, Any], spec: CacheSpec) -> list[str]:
    """The parts in which a (sound) cache differs from what the run needs; empty = it serves the run."""
    diffs = [words for key, words in PARTS.items() if man["parts"].get(key) != spec.parts[key]]
    have, need = man["request"], _request_dict(spec.request)
    lacks = {k: sorted(set(need[k]) - set(have.get(k, []))) for k in KINDS}
    missing = [f"{k}{v}" for k, v in lacks.items() if v]
    if missing:
        diffs.append("features (lacks " + ", ".join(missing) + ")")
    elif spec.request and man["dtype"] not in (spec.dtype, "float32"):  # float32 serves a float16 request
        diffs.append(f"feature dtype ({man['dtype']}, not {spec.dtype})")
    return diffs


def _build_dir(folder: Path) -> Path:
    """The temporary folder a build of `folder` writes into: hidden, and named by host and process."""
    return folder.parent / f".{folder.name}.tmp-{socket.gethostname()}-{os.getpid()}"


def _gone(name: str) -> bool:
    """Whether the process that named temporary build folder `name` has ended (so its folder is stale).

    Names are `.FP.tmp-HOST-PID` (older builds: `.FP.tmp-PID`, taken as this host's). A process on another host
    cannot be asked, so its folder is kept; so is one whose name does not parse.
    """
    tail = name.rsplit(".tmp-", 1)[-1]
    host, _, pid = tail.rpartition("-")
    if not pid.isdigit() or (host and host != socket.gethostname()):
        return False
    if int(pid) == os.getpid():
        return True  # this process is not building it now: callers run between builds
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # PermissionError: alive, another user's; anything else: unknown, so keep it
    return False


def remove_stale_builds(root: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Remove the temporary folders that killed builds left under cache root `root`; returns those removed.

    A folder whose build is still running (its process is alive, or on another host) is kept, so two runs
    sharing a root never delete each other's work.
    """
    removed = []
    for tmp in sorted(root.glob(".*.tmp-*")) if root.is_dir() else []:
        if tmp.is_dir() and _gone(tmp.name):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    if removed:
        log(f"teacher cache: removed {len(removed)} unfinished build(s) left by a killed run in {root}")
    return removed


def find_cache(root: Path, spec: CacheSpec, log: Callable[[str], None] = print) -> Path | None:
    """A sound cache under `root` that serves `spec`: its own fingerprint first, else one that stores more.

    Hidden folders (builds in progress or cut short) are not caches and are not looked at.
    """
    exact = root / spec.fingerprint
    others = sorted(p.parent for p in root.glob(f"*/{MANIFEST}")
                    if p.parent != exact and not p.parent.name.startswith("."))
    for folder in [exact, *others]:
        if not (folder / MANIFEST).is_file():
            continue
        try:
            man = read_manifest(folder)
            problem = _damage(folder, man)
        except KDistillError as err:
            problem = str(err)
        if problem:
            log(f"teacher cache {folder} is damaged ({problem}); not used")
            continue
        if not _mismatch(man, spec):
            return folder
    if others:
        log(f"none of the {len(others)} teacher cache(s) in {root} matches this teacher, tokenizer, data, "
            "max_length and feature set; building a new one")
    return None


def check_folder(folder: Path, spec: CacheSpec) -> None:
    """A cache folder the user named directly must be sound and match: else one KDistillError line."""
    man = read_manifest(folder)
    problem = _damage(folder, man)
    if problem:
        raise KDistillError(f"teacher_cache {folder} is damaged: {problem}; delete it or point teacher_cache "
                            "at a cache root to rebuild")
    diffs = _mismatch(man, spec)
    if diffs:
        raise KDistillError(f"teacher_cache {folder} was built for another run ({'; '.join(diffs)} differ); "
                            "point teacher_cache at a cache root (e.g. its parent folder) or set it to true "
                            "to build a matching cache")


def human_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def _example_bytes(lengths: list[int], request: FeatureRequest, num_labels: int, hidden: int, heads: int,
                   itemsize: int, per_token: bool = False) -> list[int]:
    nh, na = len(request.hidden), len(request.attn_scores) + len(request.attn_probs)
    return [num_labels * 4 * (n if per_token else 1) + 8 + itemsize * (nh * n * hidden + na * heads * n * n)
            for n in lengths]


def build_cache(folder: Path, spec: CacheSpec, teacher: nn.Module, train: Dataset, tokenizer: Any, *,
                batch_size: int = 64, device: str | torch.device = "cpu", progress: bool = True,
                log: Callable[[str], None] = print, note: dict[str, Any] | None = None,
                per_token: bool = False) -> dict[str, Any]:
    """Run `teacher` (eval mode, float32) once over `train` and write the cache to `folder`; returns its manifest.

    Examples are batched longest first inside each shard, so padding is small; each is stored unpadded.
    `per_token`: the teacher's logits are (B, L, C) (`kdistill.tasks.Task.per_token`); each example's real tokens'
    rows are stored, one after another like the hidden states.
    The folder appears only when complete (written under a temporary name, then renamed), with the file modes
    `open()` gives (safetensors writes 0600). Temporary folders of killed builds in the same root are removed first.
    """
    if getattr(tokenizer, "padding_side", "right") != "right":
        raise KDistillError("the teacher cache needs a tokenizer that pads on the right: with left padding, "
                            "encoders with absolute positions give each example other outputs in each batch")
    request, dtype = spec.request, DTYPES[spec.dtype]
    lengths = [len(x) for x in train["input_ids"]]
    cfg = teacher.config
    hidden, heads = int(cfg.hidden_size), int(cfg.num_attention_heads)
    sizes = _example_bytes(lengths, request, int(cfg.num_labels), hidden, heads, dtype.itemsize, per_token)
    padded = _example_bytes([max(lengths)] * len(lengths), request, int(cfg.num_labels), hidden, heads,
                            dtype.itemsize, per_token)
    what = ["logits"] + [f"{k}{v}" for k, v in _request_dict(request).items() if v]
    log(f"teacher cache: {len(lengths):,} examples x {' + '.join(what)}"
        + (f" ({spec.dtype})" if request else "") + f", about {human_bytes(sum(sizes))} unpadded "
        f"({human_bytes(sum(padded))} if padded to {max(lengths)} tokens); building {folder}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(folder.parent, log)  # before measuring free space: they may hold much of it
    free = shutil.disk_usage(folder.parent).free
    if sum(sizes) * 1.05 > free:
        raise KDistillError(f"not enough disk space for the teacher cache: it needs about {human_bytes(sum(sizes))}, "
                            f"{human_bytes(free)} are free in {folder.parent}")
    ranges, start, acc = [], 0, 0
    for i, b in enumerate(sizes):
        if acc and acc + b > SHARD_BYTES:
            ranges.append((start, i))
            start, acc = i, 0
        acc += b
    ranges.append((start, len(sizes)))
    inputs = train.select_columns([c for c in train.column_names if c in tokenizer.model_input_names])
    collate = DataCollatorWithPadding(tokenizer)
    was_training = teacher.training
    teacher.eval().to(device)
    tmp = _build_dir(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    t0 = time.perf_counter()
    shards = []
    bar = tqdm(total=len(lengths), desc="teacher cache", unit="ex", disable=not progress, dynamic_ncols=True)
    try:
        for no, (a, b) in enumerate(ranges):
            order = sorted(range(a, b), key=lambda i: -lengths[i])
            # where each example's logits rows start: one row per example, or one per real token
            starts = torch.tensor([0, *lengths[a:b]]).cumsum(0).tolist() if per_token else list(range(b - a + 1))
            logits = torch.empty(starts[-1], int(cfg.num_labels))
            feats: dict[str, list[Tensor]] = {f"{k}.{layer}": [torch.empty(0)] * (b - a)
                                              for k in KINDS for layer in getattr(request, k)}
            for k in range(0, len(order), batch_size):
                ids = order[k:k + batch_size]
                rows = inputs[ids]
                batch = collate([dict(zip(rows, vals, strict=True)) for vals in zip(*rows.values(), strict=True)])
                batch = {key: v.to(device) for key, v in batch.items()}
                with torch.inference_mode():
                    out = forward_features(teacher, batch, request)
                for j, i in enumerate(ids):
                    pos, r = slice(0, lengths[i]), i - a  # right padding: real tokens come first
                    logits[starts[r]:starts[r + 1]] = (out.logits[j, pos] if per_token else out.logits[j]).float().cpu()
                    for layer, h in out.hidden.items():
                        feats[f"hidden.{layer}"][r] = h[j, pos].to(dtype).cpu()
                    for kind in ("attn_scores", "attn_probs"):
                        for layer, t in getattr(out, kind).items():
                            feats[f"{kind}.{layer}"][r] = t[j, :, pos, pos].to(dtype).cpu().reshape(-1)
                bar.update(len(ids))
            tensors = {"logits": logits, "lengths": torch.tensor(lengths[a:b], dtype=torch.int64)}
            tensors.update({name: torch.cat(parts) for name, parts in feats.items()})
            name = f"shard-{no:05d}.safetensors"
            save_file(tensors, str(tmp / name))
            shards.append({"file": name, "start": a, "stop": b, "bytes": (tmp / name).stat().st_size})
        seconds = time.perf_counter() - t0
        man = {"format": FORMAT, "fingerprint": spec.fingerprint, "parts": spec.parts,
               "request": _request_dict(request), "dtype": spec.stored_dtype, "num_examples": len(lengths),
               "num_labels": int(cfg.num_labels), "hidden_size": hidden, "num_heads": heads, "shards": shards,
               "bytes": sum(s["bytes"] for s in shards), "build_seconds": seconds,
               **({"logits_per_token": True} if per_token else {}), **(note or {})}
        atomic_write_json(tmp / MANIFEST, man)  # the folder is renamed whole below; this keeps the file whole too
        usual_modes(tmp)
        kill_point("teacher-cache-built")  # test hook: a build killed before its rename leaves only `tmp`
        shutil.rmtree(folder, ignore_errors=True)  # a damaged copy under the same fingerprint
        os.rename(tmp, folder)
    finally:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
        teacher.train(was_training)
    log(f"teacher cache: {human_bytes(man['bytes'])} written in {seconds:.1f} s")
    return man
