"""TinyBERT's data augmentation (Jiao et al. 2020, Algorithm 1): replace words by likely alternatives.

For each word of a sentence: when it is a single word-piece, mask it and take the masked LM's K most likely
word-pieces at that position; otherwise take its K nearest words by static word vectors (GloVe). Each of N_a copies
then replaces every word that has candidates with probability p_t by one of them, uniformly.

The reference code makes one full forward pass (and a full-vocabulary projection) per word. Here every masked
variant of every sentence in a chunk goes through the encoder in length-sorted batches, and the vocabulary
projection runs only at the masked rows (`features.score_masked_rows_only`); the candidates are the same.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from kdistill.config import AugmentConfig
from kdistill.data import load_task_data
from kdistill.distill.features import only_rows, score_masked_rows_only
from kdistill.errors import KDistillError
from kdistill.models import pick_device


@dataclass
class Sentence:
    words: list[str]
    candidates: list[list[str]]  # per word; empty = never replaced


def split_words(tokenizer: Any, text: str) -> list[str]:
    """The tokenizer's own normalisation and word split (BERT: lower-case, split on spaces and punctuation)."""
    backend = tokenizer.backend_tokenizer
    norm = backend.normalizer.normalize_str(text) if backend.normalizer is not None else text
    if backend.pre_tokenizer is None:
        return norm.split()
    return [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(norm)]


def resolve_precision(precision: str, device: str) -> str:
    """'auto' -> bf16 only where the hardware computes it natively (CUDA with bf16, CPUs with AVX512-BF16 or
    AMX); elsewhere bf16 autocast is emulated and slower than fp32."""
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    cpu = getattr(torch, "cpu", None)
    native = any(bool(getattr(cpu, name, lambda: False)()) for name in
                 ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return "bf16" if native else "fp32"


class Augmenter:
    """Candidate lists per word (batched masked-LM calls + vector neighbours) and seeded replacement."""

    def __init__(self, mlm: Any, tokenizer: Any, vectors: Any, *, k: int = 15, batch_size: int = 128,
                 max_length: int = 128, device: str = "cpu", precision: str = "fp32") -> None:
        if tokenizer.mask_token_id is None:
            raise KDistillError("the masked LM's tokenizer has no [MASK] token")
        self.mlm, self.tok, self.vectors, self.k = mlm.to(device).eval(), tokenizer, vectors, k
        self.batch_size, self.max_length, self.device = batch_size, max_length, device
        self.precision = resolve_precision(precision, device)
        self.bf16 = self.precision == "bf16"
        self.hooked = score_masked_rows_only(self.mlm)
        vocab = tokenizer.get_vocab()
        self.vocab = vocab
        specials = set(tokenizer.all_special_ids)
        # word-pieces a replacement may be: whole words only, no specials, no "##" continuations, no [unused]
        allowed = torch.zeros(len(tokenizer), dtype=torch.bool)
        for piece, i in vocab.items():
            if i < len(allowed) and i not in specials and not piece.startswith("##") and not piece.startswith("[") \
                    and any(c.isalnum() for c in piece):
                allowed[i] = True
        self.allowed = allowed
        self.id_to_piece = {i: p for p, i in vocab.items()}
        self.mlm_calls = 0

    def single_piece(self, word: str) -> bool:
        return word in self.vocab and self.tok.convert_tokens_to_ids(word) != self.tok.unk_token_id

    # ------------------------------------------------------------------ masked-LM candidates, batched
    def _encode(self, words: list[str]) -> tuple[list[int], list[int | None]]:
        enc = self.tok(words, is_split_into_words=True, truncation=True, max_length=self.max_length)
        return enc["input_ids"], enc.word_ids()

    @torch.no_grad()
    def _mlm_topk(self, jobs: list[tuple[list[int], int, str]]) -> list[list[str]]:
        """`jobs`: (input ids, position to mask, original word) -> top-k replacement words for each."""
        out: list[list[str]] = [[] for _ in jobs]
        order = sorted(range(len(jobs)), key=lambda j: len(jobs[j][0]))
        pad = self.tok.pad_token_id or 0
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            width = max(len(jobs[j][0]) for j in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            rows = torch.zeros((len(idx), width), dtype=torch.bool)
            for r, j in enumerate(idx):
                seq, pos, _ = jobs[j]
                ids[r, :len(seq)] = torch.tensor(seq)
                ids[r, pos] = self.tok.mask_token_id
                mask[r, :len(seq)] = 1
                rows[r, pos] = True
            dev_type = torch.device(self.device).type
            with only_rows(rows.to(self.device)), torch.autocast(dev_type, torch.bfloat16, enabled=self.bf16):
                logits = self.mlm(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            self.mlm_calls += 1
            if logits.dim() == 3:  # head not hooked: pick the masked rows here
                logits = logits[rows.to(logits.device)]
            logits = logits.float().masked_fill(~self.allowed[: logits.size(-1)].to(logits.device), float("-inf"))
            top = logits.topk(self.k + 1, dim=-1).indices.tolist()
            for r, j in enumerate(idx):
                word = jobs[j][2]
                out[j] = [p for p in (self.id_to_piece[t] for t in top[r]) if p != word][: self.k]
        return out

    def candidates(self, texts: list[str]) -> list[Sentence]:
        """Words and candidate lists of each text: masked LM for single pieces, vectors for the rest."""
        sents, jobs, where = [], [], []
        multi: set[str] = set()
        for si, text in enumerate(texts):
            words = split_words(self.tok, text)
            sents.append(Sentence(words, [[] for _ in words]))
            if not words:
                continue
            ids, word_ids = self._encode(words)
            first: dict[int, int] = {}
            count: dict[int, int] = {}
            for pos, w in enumerate(word_ids):
                if w is not None:
                    first.setdefault(w, pos)
                    count[w] = count.get(w, 0) + 1
            for wi, word in enumerate(words):
                if self.single_piece(word):
                    if count.get(wi) == 1:  # truncated words get no candidates
                        jobs.append((ids, first[wi], word))
                        where.append((si, wi))
                else:
                    multi.add(word)
        for (si, wi), cands in zip(where, self._mlm_topk(jobs), strict=True):
            sents[si].candidates[wi] = cands
        near = self.vectors.nearest(sorted(multi), self.k) if multi else {}
        for s in sents:
            for wi, word in enumerate(s.words):
                if word in near:
                    s.candidates[wi] = near[word]
        return sents

    def reference_candidates(self, text: str) -> Sentence:
        """The reference implementation's way: one forward pass with full vocabulary logits per word.
        Kept for the speed comparison and for tests that the batched path gives the same candidates."""
        words = split_words(self.tok, text)
        s = Sentence(words, [[] for _ in words])
        ids, word_ids = self._encode(words)
        multi = []
        for wi, word in enumerate(words):
            if not self.single_piece(word):
                multi.append(word)
                continue
            positions = [p for p, w in enumerate(word_ids) if w == wi]
            if len(positions) != 1:
                continue
            masked = list(ids)
            masked[positions[0]] = self.tok.mask_token_id
            with torch.no_grad():
                logits = self.mlm(input_ids=torch.tensor([masked], device=self.device)).logits[0, positions[0]]
            self.mlm_calls += 1
            logits = logits.float().masked_fill(~self.allowed[: logits.size(-1)].to(logits.device), float("-inf"))
            top = logits.topk(self.k + 1).indices.tolist()
            s.candidates[wi] = [p for p in (self.id_to_piece[t] for t in top) if p != word][: self.k]
        near = self.vectors.nearest(multi, self.k) if multi else {}
        for wi, word in enumerate(words):
            if word in near:
                s.candidates[wi] = near[word]
        return s


def replace_words(sentence: Sentence, p_t: float, n_a: int, rng: np.random.Generator) -> list[str]:
    """N_a copies; each word with candidates is replaced with probability p_t by a uniform pick among them."""
    copies = []
    for _ in range(n_a):
        words = []
        for word, cands in zip(sentence.words, sentence.candidates, strict=True):
            if cands and rng.random() < p_t:
                words.append(cands[int(rng.integers(len(cands)))])
            else:
                words.append(word)
        copies.append(" ".join(words))
    return copies


def augment_task(cfg: AugmentConfig, augmenter: Augmenter | None = None) -> dict[str, Any]:
    """Augment the task's training split (after the validation carve, so no validation text leaks) into JSONL."""
    data = load_task_data(cfg.data)
    data.task.check_augment()  # multi-label sets are not kept through augmentation (yet): refused before any work
    train = data.splits["train"]
    n = min(len(train), cfg.max_examples or len(train))
    if augmenter is None:
        from kdistill.mlm import load_masked_lm
        from kdistill.models import load_tokenizer
        from kdistill.vectors import load_vectors

        augmenter = Augmenter(load_masked_lm(cfg.mlm), load_tokenizer(cfg.mlm), load_vectors(cfg.vectors),
                              k=cfg.k, batch_size=cfg.batch_size, max_length=cfg.data.max_length,
                              device=pick_device(cfg.device), precision=cfg.precision)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    chunk = 64
    start = time.perf_counter()
    mlm_words = vector_words = 0
    with tmp.open("w", encoding="utf-8") as f, tqdm(total=n, desc="[augment]", unit="ex", dynamic_ncols=True) as bar:
        for lo in range(0, n, chunk):
            rows = train[lo:min(lo + chunk, n)]
            firsts = augmenter.candidates(rows["text_a"])
            seconds = (augmenter.candidates(rows["text_b"]) if data.is_pair and cfg.pair == "both" else None)
            for j, sent in enumerate(firsts):
                i = lo + j
                rng = np.random.default_rng([cfg.seed, i])  # per example: independent of chunking
                a = replace_words(sent, cfg.p_t, cfg.n_a, rng)
                b = (replace_words(seconds[j], cfg.p_t, cfg.n_a, rng) if seconds is not None
                     else [rows["text_b"][j]] * cfg.n_a if data.is_pair else None)
                label = data.task.augment_fields(rows["label"][j], data.label_names)  # a class, or a score
                for c in range(cfg.n_a):
                    row: dict[str, Any] = {"text": a[c]}
                    if b is not None:
                        row["text_pair"] = b[c]
                    row.update(**label, source=i, copy=c)
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                for s in [sent] + ([seconds[j]] if seconds is not None else []):
                    for w, cands in zip(s.words, s.candidates, strict=True):
                        if cands:
                            if augmenter.single_piece(w):
                                mlm_words += 1
                            else:
                                vector_words += 1
            bar.update(len(firsts))
    tmp.replace(out)
    seconds_taken = time.perf_counter() - start
    rate = n / seconds_taken if seconds_taken > 0 else float("inf")
    summary = {"task": data.name, "examples": n, "written": n * cfg.n_a, "out": str(out), "seconds": seconds_taken,
               "examples_per_second": rate, "mlm_calls": augmenter.mlm_calls, "mlm_words": mlm_words,
               "vector_words": vector_words, "p_t": cfg.p_t, "n_a": cfg.n_a, "k": cfg.k,
               "precision": augmenter.precision}
    print(f"[augment] {n} examples -> {n * cfg.n_a} rows in {seconds_taken:.1f} s ({rate:.1f} examples/s; "
          f"{mlm_words} words from the masked LM, {vector_words} from word vectors; masked LM in "
          f"{augmenter.precision}); written to {out}", flush=True)
    return summary
