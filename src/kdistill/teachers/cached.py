"""The teacher-output cache as a teacher: read a cache folder (`kdistill.cache` writes them), or find/build one.

Logits and lengths are loaded at once (small); features are sliced per example from the memory-mapped shards.
A per-token cache (`logits_per_token`: NER, QA) holds each example's logits rows for its real tokens, padded back to
the batch's width with zeros like the hidden states.
A cache always holds the teacher's outputs on its own tokenization, so one built for a student of the teacher's
vocabulary also serves a student of another one, and the reverse: per example, the logits and each example's hidden
states on the teacher's tokens with the teacher's mask (what `other_tokenizer.per_example` gives live), which the
per-example losses pool ([CLS] for `cls_cosine`, the mean over real tokens for the mean-pooled losses). Every cache
stores all of an example's real tokens, so caches written before the mean-pooled losses existed serve them too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from safetensors import safe_open
from torch import Tensor, nn

from kdistill.cache import (
    KINDS,
    MANIFEST,
    CacheSpec,
    build_cache,
    cache_spec,
    check_folder,
    find_cache,
    read_manifest,
    remove_stale_builds,
)
from kdistill.distill.features import FeatureRequest, Features
from kdistill.errors import KDistillError
from kdistill.teachers.other_tokenizer import check_per_example


class CachedTeacher:
    """A TeacherSource reading a cache: for a batch with an `idx` column, the `Features` the live teacher gives.

    Features are padded back to the batch's width with zeros (losses read only real tokens, by the mask).
    With `per_example` (a student of another tokenizer) the batch's tokens are not the cached ones: it gets the
    logits and, per requested hidden layer, the (B, L_t, H) states on the teacher's tokens, with the teacher's
    (right-padded) mask as `mask`, as `kdistill.teachers.other_tokenizer.per_example` describes.
    """

    def __init__(self, folder: str | Path, request: FeatureRequest, per_example: bool = False) -> None:
        if per_example:
            check_per_example(request)
        self.per_example = per_example
        self.folder = Path(folder)
        self.manifest = man = read_manifest(self.folder)
        self.request = request
        self.hidden, self.heads = int(man["hidden_size"]), int(man["num_heads"])
        self.per_token = bool(man.get("logits_per_token", False))
        if per_example and self.per_token:
            raise KDistillError(f"teacher cache {self.folder} holds per-token outputs, which a student of another "
                                "tokenizer cannot use")
        names = [f"{k}.{layer}" for k in KINDS for layer in getattr(request, k)]
        logits, lengths, self._slices, self._where, self._handles = [], [], [], [], []
        for no, sh in enumerate(man["shards"]):
            f = safe_open(str(self.folder / sh["file"]), framework="pt")
            self._handles.append(f)  # keeps the memory maps open
            logits.append(f.get_tensor("logits"))
            lens = f.get_tensor("lengths")
            lengths.append(lens)
            try:
                self._slices.append({n: f.get_slice(n) for n in names})
            except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
                raise KDistillError(f"teacher cache {self.folder} lacks a feature this run needs ({err})") from None
            tok = torch.cumsum(lens, 0) - lens
            att = torch.cumsum(lens * lens, 0) - lens * lens
            self._where += [(no, int(t), int(q)) for t, q in zip(tok.tolist(), att.tolist(), strict=True)]
        self.logits = torch.cat(logits).float()  # (examples, C), or (tokens of all examples, C) per token
        self.lengths = torch.cat(lengths).tolist()
        self._rows = torch.tensor([0, *self.lengths]).cumsum(0).tolist() if self.per_token else []
        rows = self._rows[-1] if self.per_token else len(self.lengths)
        if len(self.lengths) != man["num_examples"] or self.logits.shape[0] != rows:
            raise KDistillError(f"teacher cache {self.folder} holds {len(self.lengths)} examples, "
                                f"its manifest says {man['num_examples']}")

    def signals(self, batch: Mapping[str, Tensor]) -> Features:
        if "idx" not in batch:
            raise KDistillError("a batch served from the teacher cache must carry the example index 'idx'")
        idx = batch["idx"].tolist()
        mask = batch["attention_mask"]
        lengths = torch.tensor([self.lengths[i] for i in idx])
        if self.per_example:  # the teacher's own tokens, right-padded to the longest of the batch
            width = int(lengths.max()) if idx else 0
            t_mask = (torch.arange(width)[None, :] < lengths[:, None]).to(mask.dtype)
            feats = Features(logits=self.logits[idx].to(mask.device), mask=t_mask.to(mask.device))
            for layer in self.request.hidden:
                feats.hidden[layer] = self._gather(f"hidden.{layer}", idx, width).to(mask.device)
            return feats
        width = mask.shape[1]
        if not torch.equal(mask.detach().cpu().bool(), torch.arange(width)[None, :] < lengths[:, None]):
            raise KDistillError(f"the teacher cache {self.folder} does not match this batch: its examples have "
                                "other lengths than the cache holds, or are not padded on the right")
        feats = Features(logits=self._batch_logits(idx, width).to(mask.device), mask=mask)
        for kind in KINDS:
            table = getattr(feats, kind)
            for layer in getattr(self.request, kind):
                table[layer] = self._gather(f"{kind}.{layer}", idx, width).to(mask.device)
        return feats

    def example_logits(self, i: int) -> Tensor:
        """The stored logits of training example `i`: (C,), or (n_tokens, C) for a per-token cache."""
        return self.logits[self._rows[i]:self._rows[i + 1]] if self.per_token else self.logits[i]

    def _batch_logits(self, idx: list[int], width: int) -> Tensor:
        """(B, C), or (B, width, C) per token with zeros at the padding (the losses read labelled tokens only)."""
        if not self.per_token:
            return self.logits[idx]
        out = torch.zeros(len(idx), width, self.logits.shape[1])
        for j, i in enumerate(idx):
            out[j, :self.lengths[i]] = self.example_logits(i)
        return out

    def _gather(self, name: str, idx: list[int], width: int) -> Tensor:
        hidden = name.startswith("hidden.")
        shape = (len(idx), width, self.hidden) if hidden else (len(idx), self.heads, width, width)
        out = torch.zeros(shape)
        for j, i in enumerate(idx):
            n = self.lengths[i]
            shard, tok, att = self._where[i]
            if hidden:
                out[j, :n] = self._slices[shard][name][tok:tok + n]
            else:
                a = self.heads * att
                out[j, :, :n, :n] = self._slices[shard][name][a:a + self.heads * n * n].view(self.heads, n, n)
        return out


def open_cache(location: str | Path, spec: CacheSpec, build: Callable[[Path], dict[str, Any]] | None,
               log: Callable[[str], None] = print, per_example: bool = False) -> tuple[CachedTeacher, dict[str, Any]]:
    """Serve `spec` from `location`: a cache folder (must match) or a cache root (found there, else built).

    `build(folder)` writes a new cache; None (processes other than the main one) means it must exist.
    `per_example`: the source serves a student of another tokenizer (see `CachedTeacher`).
    Once the cache is complete, the main process removes what killed builds left beside it (`remove_stale_builds`).
    Returns the source and a summary for metrics.json: folder, whether it was built, its size and build time.
    """
    location = Path(location).expanduser()
    built = False
    if (location / MANIFEST).is_file():
        check_folder(location, spec)
        folder = location
    else:
        found = find_cache(location, spec, log) if location.is_dir() else None
        if found is None:
            if build is None:
                raise KDistillError(f"no teacher cache in {location} serves this run")
            build(location / spec.fingerprint)
            found, built = location / spec.fingerprint, True
        folder = found
    if not built:
        log(f"teacher cache: reusing {folder}")
    if build is not None:
        remove_stale_builds(folder.parent, log)
    source = CachedTeacher(folder, spec.request, per_example)
    man = source.manifest
    return source, {"folder": str(folder), "built": built, "bytes": man["bytes"],
                    "build_seconds": man["build_seconds"] if built else 0.0, "fingerprint": man["fingerprint"]}


def cached_teacher(location: str | Path, teacher: nn.Module, tokenizer: Any, raw_train: Dataset, train: Dataset, *,
                   max_length: int, request: FeatureRequest, dtype: str, device: str, batch_size: int,
                   progress: bool, teacher_name: str, per_example: bool = False, per_token: bool = False
                   ) -> tuple[CachedTeacher, dict[str, Any]]:
    """Find or build the cache of `teacher`'s outputs on `train` (`raw_train` tokenised by the teacher's
    `tokenizer`) under `location`; `per_token`: the teacher's logits are per token (`Task.per_token`).

    The main process builds; the others wait for it and then open the same folder. `device` is the run's
    `train.device` ("cpu" keeps Accelerate on the CPU). Returns `open_cache`'s source and summary.
    """
    from accelerate import PartialState

    from kdistill.distill.distiller import fresh_accelerate_state  # here: the distiller imports this package

    spec = cache_spec(teacher, tokenizer, raw_train, train, max_length, request, dtype)
    fresh_accelerate_state()
    state = PartialState(cpu=device == "cpu")

    def log(msg: str) -> None:
        if state.is_main_process:
            print(f"[distill] {msg}", flush=True)

    def build(folder: Path) -> dict[str, Any]:
        return build_cache(folder, spec, teacher, train, tokenizer, batch_size=batch_size, device=state.device,
                           progress=progress, log=log, note={"teacher_name": teacher_name}, per_token=per_token)

    result = open_cache(location, spec, build, log, per_example) if state.is_main_process else None
    state.wait_for_everyone()
    return result or open_cache(location, spec, None, log, per_example)
