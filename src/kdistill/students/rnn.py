"""Non-transformer students: a BiLSTM and a CNN text classifier (Tang et al. 2019, "Distilling task-specific
knowledge from BERT into simple neural networks"), trained from the teacher's logits.

They are ordinary Hugging Face models (a registered config and model class), so `save_pretrained`,
`load_classifier`, `kdistill evaluate`, `kdistill export` (ONNX) and `kdistill bench` treat them like any student.
Their word embeddings start from the teacher's (same tokenizer, so the same rows), or from static word vectors
(`student.embeddings: glove-6b-50d` or a GloVe/word2vec file, as in Tang et al.): each word-piece of the teacher's
vocabulary gets its word's vector. Either start is what makes a tiny recurrent or convolutional model learn quickly
from a few epochs of soft targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from kdistill.errors import KDistillError


class SimpleStudentConfig(PretrainedConfig):
    """`kind` is "bilstm" or "cnn"; `num_hidden_layers`/`num_attention_heads` exist for kdistill's probe."""

    model_type = "kdistill-simple"

    def __init__(self, kind: str = "bilstm", vocab_size: int = 30522, embedding_size: int = 300,
                 hidden_size: int = 300, kernel_sizes: tuple[int, ...] = (3, 4, 5), dropout: float = 0.1,
                 max_position_embeddings: int = 512, pad_token_id: int = 0, **kwargs: Any) -> None:
        kwargs.setdefault("num_hidden_layers", 1)
        kwargs.setdefault("num_attention_heads", 1)
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.kind, self.vocab_size, self.embedding_size = kind, vocab_size, embedding_size
        self.hidden_size, self.kernel_sizes, self.dropout = hidden_size, list(kernel_sizes), dropout
        self.max_position_embeddings = max_position_embeddings


class SimpleStudentForSequenceClassification(PreTrainedModel):
    """Embeddings -> BiLSTM (or parallel 1-D convolutions) -> max-pool over real tokens -> MLP -> logits."""

    config_class = SimpleStudentConfig
    base_model_prefix = "simple"

    def __init__(self, config: SimpleStudentConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        if config.kind == "bilstm":
            encoder: nn.Module = nn.LSTM(config.embedding_size, config.hidden_size // 2, batch_first=True,
                                         bidirectional=True)
            width = 2 * (config.hidden_size // 2)
        elif config.kind == "cnn":
            encoder = nn.ModuleList(nn.Conv1d(config.embedding_size, config.hidden_size, k, padding=k // 2)
                                    for k in config.kernel_sizes)
            width = config.hidden_size * len(config.kernel_sizes)
        else:
            raise ValueError(f"unknown simple student kind {config.kind!r} (bilstm or cnn)")
        self.layers = nn.ModuleList([encoder])  # one "layer", so kdistill's probe finds the depth
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, config.num_labels))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                **_: Any) -> SequenceClassifierOutput:
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        x = self.dropout(self.embeddings(input_ids)) * mask.unsqueeze(-1).to(self.embeddings.weight.dtype)
        encoder = self.layers[0]
        if isinstance(encoder, nn.LSTM):  # neither direction reads the padding (see _bilstm)
            h = _bilstm(encoder, x, mask)
        else:  # padded positions are zero vectors, as the convolution's own zero padding
            length = x.size(1)
            h = torch.cat([torch.relu(conv(x.transpose(1, 2)))[..., :length] for conv in encoder], dim=1)
            h = h.transpose(1, 2)
        h = h.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(h.dtype).min).max(dim=1).values
        logits = self.classifier(self.dropout(h))
        return SequenceClassifierOutput(loss=self._loss(logits, labels) if labels is not None else None, logits=logits)

    def _loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The loss a Hugging Face classifier of this `problem_type` computes (regression, multi-label, classes)."""
        if self.config.problem_type == "regression" or (self.config.problem_type is None and logits.size(-1) == 1):
            return nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
        if self.config.problem_type == "multi_label_classification":
            return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return nn.functional.cross_entropy(logits, labels)


def _bilstm(lstm: nn.LSTM, x: Tensor, mask: Tensor) -> Tensor:
    """A one-layer bidirectional LSTM over right-padded rows, exactly as if each row were unpadded.

    The forward direction runs over the padded batch (padding comes after every real token, so it never reaches
    them). The backward direction runs forward over each row reversed within its own length, and its outputs are
    put back in place. The same numbers as `pack_padded_sequence`, but only gathers and plain LSTM calls, which
    torch.export and ONNX can trace with dynamic batch and sequence sizes (packing cannot be exported).
    """
    lengths = mask.sum(dim=1, keepdim=True).clamp_min(1)
    pos = torch.arange(x.size(1), device=x.device).unsqueeze(0)
    rev = torch.where(pos < lengths, lengths - 1 - pos, pos)  # position t <-> length-1-t; padding stays put
    h0 = x.new_zeros(1, x.size(0), lstm.hidden_size)
    weights = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0]
    back = [lstm.weight_ih_l0_reverse, lstm.weight_hh_l0_reverse, lstm.bias_ih_l0_reverse, lstm.bias_hh_l0_reverse]
    # the call nn.LSTM makes: (input, hx, weights, biases, layers, dropout, train, bidirectional, batch_first)
    fwd = torch._VF.lstm(x, (h0, h0), weights, True, 1, 0.0, lstm.training, False, True)[0]
    x_rev = x.gather(1, rev.unsqueeze(-1).expand(-1, -1, x.size(2)))
    bwd = torch._VF.lstm(x_rev, (h0, h0), back, True, 1, 0.0, lstm.training, False, True)[0]
    bwd = bwd.gather(1, rev.unsqueeze(-1).expand(-1, -1, lstm.hidden_size))  # not expand_as: the exporter records
    # the LSTM output's length as the example batch's, and ONNX Runtime would expand to that
    return torch.cat([fwd, bwd], dim=-1)


AutoConfig.register(SimpleStudentConfig.model_type, SimpleStudentConfig)
AutoModelForSequenceClassification.register(SimpleStudentConfig, SimpleStudentForSequenceClassification)


def _piece_word(token: str) -> str:
    return token[2:] if token.startswith("##") and len(token) > 2 else token


def vector_embeddings(vocab: Mapping[str, int], rows: int, spec: str,
                      pad_token_id: int = 0) -> tuple[Tensor, dict[str, Any]]:
    """An embedding matrix [rows, D] for a word-piece vocabulary from word vectors (`kdistill.vectors`).

    Each entry gets its word's vector (a continuation piece "##ing" that of "ing"; a lower-cased lookup when the
    spelling itself is missing). Entries without a vector get normal noise with the vectors' own standard deviation
    (from torch's generator, so `train.seed` fixes them); the padding row is zero. Returns the matrix and what was
    found, for the student config.
    """
    from kdistill.vectors import load_vectors

    vectors = load_vectors(spec)
    table = np.asarray(vectors.matrix)
    ids, hits = [], []
    for token, i in vocab.items():
        if not 0 <= i < rows or i == pad_token_id:
            continue
        word = _piece_word(token)
        j = vectors.index.get(word)
        if j is None:
            j = vectors.index.get(word.lower())
        if j is not None:
            ids.append(i)
            hits.append(j)
    std = float(table.std(dtype=np.float64))
    weight = torch.randn(rows, vectors.dim) * std
    if ids:
        weight[torch.tensor(ids)] = torch.from_numpy(np.asarray(table[np.asarray(hits)], dtype=np.float32))
    if 0 <= pad_token_id < rows:
        weight[pad_token_id] = 0.0
    info = {"from": "vectors", "vectors": spec, "dim": vectors.dim, "found": len(ids), "vocab": rows}
    return weight, info


def simple_student(kind: str, teacher: PreTrainedModel, hidden_size: int | None = None, *,
                   embeddings: str = "teacher", vocab: Mapping[str, int] | None = None) -> PreTrainedModel:
    """A BiLSTM or CNN student over the teacher's vocabulary. Its word embeddings are the teacher's rows
    (`embeddings="teacher"`) or, given the tokenizer's `vocab`, word vectors (see `vector_embeddings`)."""
    words = teacher.get_input_embeddings().weight.detach()
    pad = teacher.config.pad_token_id or 0
    if embeddings == "teacher":
        init: dict[str, Any] = {"from": "teacher_embeddings"}
    else:
        if vocab is None:
            raise KDistillError(f"student.embeddings '{embeddings}' needs the teacher's tokenizer vocabulary")
        words, init = vector_embeddings(vocab, words.size(0), embeddings, pad)
    cfg = SimpleStudentConfig(kind=kind, vocab_size=words.size(0), embedding_size=words.size(1),
                              hidden_size=hidden_size or 2 * words.size(1), num_labels=teacher.config.num_labels,
                              id2label=teacher.config.id2label, label2id=teacher.config.label2id,
                              problem_type=teacher.config.problem_type, pad_token_id=pad,
                              max_position_embeddings=getattr(teacher.config, "max_position_embeddings", 512),
                              architectures=[SimpleStudentForSequenceClassification.__name__])
    cfg.kdistill_init = init
    model = SimpleStudentForSequenceClassification(cfg)
    with torch.no_grad():
        model.embeddings.weight.copy_(words)
    return model
