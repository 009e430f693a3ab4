"""Non-transformer students: a BiLSTM and a CNN text classifier (Tang et al. 2019, "Distilling task-specific
knowledge from BERT into simple neural networks"), trained from the teacher's logits.

They are ordinary Hugging Face models (a registered config and model class), so `save_pretrained`,
`load_classifier`, `kdistill evaluate` and `kdistill bench`'s PyTorch runtime treat them like any student. Their
word embeddings start from the teacher's (same tokenizer, so the same rows), which is what makes a tiny recurrent or
convolutional model learn quickly from a few epochs of soft targets.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


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
        if isinstance(encoder, nn.LSTM):  # packed, so neither direction reads the padding
            lengths = mask.sum(dim=1).clamp_min(1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            h, _ = nn.utils.rnn.pad_packed_sequence(encoder(packed)[0], batch_first=True, total_length=x.size(1))
        else:  # padded positions are zero vectors, as the convolution's own zero padding
            length = x.size(1)
            h = torch.cat([torch.relu(conv(x.transpose(1, 2)))[..., :length] for conv in encoder], dim=1)
            h = h.transpose(1, 2)
        h = h.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(h.dtype).min).max(dim=1).values
        logits = self.classifier(self.dropout(h))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(SimpleStudentConfig.model_type, SimpleStudentConfig)
AutoModelForSequenceClassification.register(SimpleStudentConfig, SimpleStudentForSequenceClassification)


def simple_student(kind: str, teacher: PreTrainedModel, hidden_size: int | None = None) -> PreTrainedModel:
    """A BiLSTM or CNN student whose word embeddings are copied from the teacher's (same vocabulary)."""
    words = teacher.get_input_embeddings().weight
    cfg = SimpleStudentConfig(kind=kind, vocab_size=words.size(0), embedding_size=words.size(1),
                              hidden_size=hidden_size or 2 * words.size(1), num_labels=teacher.config.num_labels,
                              id2label=teacher.config.id2label, label2id=teacher.config.label2id,
                              pad_token_id=teacher.config.pad_token_id or 0,
                              max_position_embeddings=getattr(teacher.config, "max_position_embeddings", 512),
                              architectures=[SimpleStudentForSequenceClassification.__name__])
    model = SimpleStudentForSequenceClassification(cfg)
    with torch.no_grad():
        model.embeddings.weight.copy_(words.detach())
    return model
