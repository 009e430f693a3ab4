"""Unlabeled text for general distillation: files or a `datasets` text dataset, cut into fixed-length blocks.

Text is tokenised in chunks through `datasets.map` (so a corpus larger than memory streams through an on-disk
Arrow cache), the word-pieces are concatenated across paragraphs and cut into blocks of `max_length - 2`, and
each block gets [CLS] ... [SEP] (BERT's pretraining format). Masking is not done here: the collator masks each
batch anew (dynamic masking, as RoBERTa and DistilBERT do), while validation uses fixed, seeded masks so epochs
compare.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import DataCollatorForLanguageModeling

from kdistill.config import CorpusConfig
from kdistill.errors import KDistillError

SHIPPED = {"wikitext2": "datasets/wikitext2/unlabeled.txt"}


def corpus_files(cfg: CorpusConfig) -> list[str]:
    out = []
    for f in cfg.files:
        if f in SHIPPED:
            out.append(str(resources.files("kdistill").joinpath(SHIPPED[f])))
        elif not Path(f).expanduser().is_file():
            raise KDistillError(f"corpus file not found: {f} (corpus.files takes text files, one paragraph a line, "
                                f"or {', '.join(SHIPPED)})")
        else:
            out.append(str(Path(f).expanduser()))
    return out


def _raw_text(cfg: CorpusConfig) -> datasets.Dataset:
    if cfg.dataset:
        try:
            p = Path(cfg.dataset)
            obj: Any = (datasets.load_from_disk(str(p)) if p.is_dir()
                        else datasets.load_dataset(cfg.dataset, cfg.dataset_config))
        except Exception as err:  # noqa: BLE001 - any loader failure becomes one readable line
            raise KDistillError(f"could not load corpus dataset {cfg.dataset}: {type(err).__name__}: "
                                f"{' '.join(str(err).split())[:300]}") from None
        ds = obj["train"] if isinstance(obj, datasets.DatasetDict) else obj
        if cfg.text_column not in ds.column_names:
            raise KDistillError(f"corpus.text_column '{cfg.text_column}' is not a column of {cfg.dataset} "
                                f"(columns: {', '.join(ds.column_names)})")
        return ds.select_columns([cfg.text_column]).rename_column(cfg.text_column, "text")
    return datasets.load_dataset("text", data_files={"train": corpus_files(cfg)}, split="train")


def load_blocks(cfg: CorpusConfig, tokenizer: Any, progress: bool = True) -> dict[str, datasets.Dataset]:
    """Blocks of exactly `cfg.max_length` token ids, split into "train" and "validation"."""
    raw = _raw_text(cfg).filter(lambda b: [bool(t and t.strip()) for t in b["text"]], batched=True)
    if len(raw) == 0:
        raise KDistillError("the corpus has no text")
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls is None or sep is None:
        raise KDistillError("the tokenizer has no [CLS]/[SEP] (or <s>/</s>) tokens to frame blocks with")
    body = cfg.max_length - 2

    def to_blocks(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        ids = tokenizer([t.strip() for t in batch["text"]], add_special_tokens=False)["input_ids"]
        flat = [i for seq in ids for i in seq]
        # the ragged tail of each chunk of paragraphs is dropped
        blocks = [[cls, *flat[s:s + body], sep] for s in range(0, len(flat) - body + 1, body)]
        return {"input_ids": blocks}

    if not progress:
        datasets.disable_progress_bars()
    try:
        blocks = raw.map(to_blocks, batched=True, batch_size=2000, remove_columns=raw.column_names,
                         desc="cutting the corpus into blocks")
    finally:
        datasets.enable_progress_bars()
    if len(blocks) < 2:
        raise KDistillError(f"the corpus gives {len(blocks)} block(s) of {cfg.max_length} tokens: too little text")
    n_val = max(1, int(round(len(blocks) * cfg.validation_fraction)))
    split = blocks.train_test_split(test_size=n_val, seed=cfg.seed, shuffle=True)
    train = split["train"]
    if cfg.max_blocks:
        train = train.select(range(min(cfg.max_blocks, len(train))))

    def extras(batch: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
        ids = batch["input_ids"]
        return {"attention_mask": [[1] * len(x) for x in ids], "token_type_ids": [[0] * len(x) for x in ids],
                "special_tokens_mask": [tokenizer.get_special_tokens_mask(x, already_has_special_tokens=True)
                                        for x in ids]}

    keep = set(tokenizer.model_input_names) | {"input_ids", "special_tokens_mask"}
    out = {}
    for name, ds in (("train", train), ("validation", split["test"])):
        ds = ds.map(extras, batched=True, desc=None)
        out[name] = ds.select_columns([c for c in ds.column_names if c in keep])
    return out


def mlm_collator(tokenizer: Any, probability: float, seed: int | None = None) -> Any:
    """Dynamic masking (global RNG, so checkpoints restore it) or, with a seed, fixed masks for validation."""
    if tokenizer.mask_token is None:
        raise KDistillError("the tokenizer has no [MASK] token: it cannot serve a masked-LM model")
    return DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability, seed=seed)


def validation_loader(blocks: datasets.Dataset, tokenizer: Any, batch_size: int, probability: float,
                      seed: int) -> list[dict[str, torch.Tensor]]:
    """Validation batches with the same masks every time (a fresh seeded collator per call)."""
    collate = mlm_collator(tokenizer, probability, seed)
    rows = [blocks[i] for i in range(len(blocks))]
    return [collate(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
