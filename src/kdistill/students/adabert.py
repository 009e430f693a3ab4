"""AdaBERT's search space and its students (Chen et al. 2020, "AdaBERT: Task-Adaptive BERT Compression with
Differentiable Neural Architecture Search"): stacked convolutional cells over the teacher's word embeddings.

A cell is a small DAG in the DARTS form (Liu et al. 2019): two input nodes (the outputs of the two previous cells,
the embeddings for the first cells), `num_nodes` intermediate nodes, each the sum of operations applied to earlier
nodes, and the cell's output the mean of its intermediate nodes. Every cell shares one architecture (AdaBERT searches
one cell type). Candidate operations, as in the paper: 1-D convolutions of kernel 3/5/7, dilated convolutions
(dilation 2) of kernel 3/5, max and average pooling of width 3, identity, and zero (no edge).

- `MixedCell` (search): every edge holds every operation, weighted by Gumbel-softmax samples of the architecture
  logits; `expected_cost` is the expected parameter count of the sampled architecture (AdaBERT's efficiency loss).
- `AdaBertForSequenceClassification` (the derived student): each node keeps its two strongest incoming edges, each
  with its strongest operation other than zero (the DARTS derivation). It is an ordinary Hugging Face model (a
  registered config and class), so it is saved, loaded by `AutoModelForSequenceClassification`, distilled with
  response losses, evaluated, timed and exported to ONNX like the CNN student.

Shapes: token states are (B, L, H); padded positions are zeroed before every operation so they never leak into
real tokens, and the classifier reads a max-pool over real tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

__all__ = ["OPS", "AdaBertConfig", "AdaBertForSequenceClassification", "MixedCell", "make_op", "op_params",
           "derive_genotype", "genotype_from_scores", "num_edges"]

OPS = ("conv3", "conv5", "conv7", "dilconv3", "dilconv5", "maxpool3", "avgpool3", "identity", "zero")
"""Candidate operations of an edge (AdaBERT, section 3.1)."""


class _Conv(nn.Module):
    def __init__(self, width: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(width, width, kernel, dilation=dilation, padding=dilation * (kernel // 2))

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:  # (B, L, H), (B, L, 1) -> (B, L, H)
        # padded positions are zero already, exactly the convolution's own zero padding at a row's end
        return torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)


class _Pool(nn.Module):
    """Width-3 pooling over real tokens only, so a row pools the same with or without padding after it."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        xt, kt = x.transpose(1, 2), keep.transpose(1, 2)
        if self.kind == "max":
            # the max of three shifted copies, not max_pool1d: torch.export fixes the length of a max_pool1d input
            low = torch.finfo(x.dtype).min
            padded = nn.functional.pad(xt.masked_fill(kt == 0, low), (1, 1), value=low)
            pooled = torch.maximum(torch.maximum(padded[..., :-2], padded[..., 1:-1]), padded[..., 2:])
            return (pooled * kt).transpose(1, 2)
        total = nn.functional.avg_pool1d(xt, 3, stride=1, padding=1, count_include_pad=True)
        count = nn.functional.avg_pool1d(kt, 3, stride=1, padding=1, count_include_pad=True)
        return (total / count.clamp_min(1e-6) * kt).transpose(1, 2)


class _Identity(nn.Module):
    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        return x


class _Zero(nn.Module):
    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        return x * 0.0


def make_op(name: str, width: int) -> nn.Module:
    """The operation `name` (one of `OPS`): `op(x, keep)` on (B, L, width) states and the (B, L, 1) real-token mask."""
    if name.startswith("dilconv"):
        return _Conv(width, int(name[7:]), 2)
    if name.startswith("conv"):
        return _Conv(width, int(name[4:]), 1)
    if name.endswith("pool3"):
        return _Pool(name[:3])
    if name == "identity":
        return _Identity()
    if name == "zero":
        return _Zero()
    raise ValueError(f"unknown AdaBERT operation {name!r} (valid: {', '.join(OPS)})")


def op_params(name: str, width: int) -> int:
    """Parameters of one operation at `width` (the unit of the efficiency loss)."""
    return sum(p.numel() for p in make_op(name, width).parameters())


def num_edges(num_nodes: int) -> int:
    """Edges of a cell: intermediate node j reads the two inputs and the j nodes before it."""
    return sum(2 + j for j in range(num_nodes))


def _edge_inputs(num_nodes: int) -> list[tuple[int, int]]:
    """(node, input state) per edge, in the order of the architecture logits' rows."""
    return [(j, i) for j in range(num_nodes) for i in range(2 + j)]


class MixedCell(nn.Module):
    """A search cell: each edge applies every operation, mixed by per-edge weights (E, len(OPS)) given to forward."""

    def __init__(self, width: int, num_nodes: int) -> None:
        super().__init__()
        self.num_nodes = num_nodes
        self.edges = nn.ModuleList(nn.ModuleList(make_op(o, width) for o in OPS) for _ in _edge_inputs(num_nodes))

    def forward(self, s0: Tensor, s1: Tensor, mask: Tensor, weights: Tensor) -> Tensor:
        states = [s0, s1]
        keep = mask.unsqueeze(-1).to(s0.dtype)
        k = 0
        for j in range(self.num_nodes):
            node = 0.0
            for i in range(2 + j):
                x = states[i] * keep
                node = node + sum(w * op(x, keep) for w, op in zip(weights[k], self.edges[k], strict=True))
                k += 1
            states.append(node * keep)
        return torch.stack(states[2:]).mean(dim=0)


def derive_genotype(alpha: Tensor, num_nodes: int) -> list[list[tuple[str, int]]]:
    """Architecture logits (E, len(OPS)) -> per node its two strongest incoming edges as (operation, input state).

    An edge's strength is its strongest non-zero operation's softmax weight (DARTS, section 2.4).
    """
    return genotype_from_scores(alpha.detach().softmax(dim=-1), num_nodes)


def genotype_from_scores(scores: Tensor, num_nodes: int) -> list[list[tuple[str, int]]]:
    """Per-edge operation scores (E, len(OPS)), higher = more wanted -> per node its two strongest incoming edges as
    (operation, input state): each edge's best operation other than zero, edges ranked by that operation's score."""
    zero = OPS.index("zero")
    genotype: list[list[tuple[str, int]]] = []
    k = 0
    for j in range(num_nodes):
        cands = []
        for i in range(2 + j):
            p = scores[k].detach().clone().float()
            p[zero] = -float("inf")
            best = int(p.argmax())
            cands.append((float(p[best]), OPS[best], i))
            k += 1
        genotype.append([(op, i) for _, op, i in sorted(cands, key=lambda c: -c[0])[:2]])
    return genotype


class AdaBertConfig(PretrainedConfig):
    """A derived AdaBERT student: `genotype` (per node, [operation, input state] pairs), `num_cells` stacked cells
    of width `hidden_size` over `embedding_size` word embeddings. `num_hidden_layers` (= cells) and
    `num_attention_heads` exist for kdistill's model probe."""

    model_type = "kdistill-adabert"

    def __init__(self, vocab_size: int = 30522, embedding_size: int = 384, hidden_size: int = 128,
                 num_cells: int = 3, genotype: list[list[list[Any]]] | None = None, dropout: float = 0.1,
                 max_position_embeddings: int = 512, pad_token_id: int = 0, **kwargs: Any) -> None:
        kwargs["num_hidden_layers"] = num_cells
        kwargs.setdefault("num_attention_heads", 1)
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size, self.embedding_size, self.hidden_size = vocab_size, embedding_size, hidden_size
        self.num_cells, self.dropout, self.max_position_embeddings = num_cells, dropout, max_position_embeddings
        self.genotype = [[[str(op), int(i)] for op, i in node] for node in (genotype or [[["conv3", 0], ["conv3", 1]]])]


class _Cell(nn.Module):
    def __init__(self, width: int, genotype: list[list[list[Any]]]) -> None:
        super().__init__()
        self.inputs = [[int(i) for _, i in node] for node in genotype]
        self.ops = nn.ModuleList(nn.ModuleList(make_op(op, width) for op, _ in node) for node in genotype)

    def forward(self, s0: Tensor, s1: Tensor, mask: Tensor) -> Tensor:
        states = [s0, s1]
        keep = mask.unsqueeze(-1).to(s0.dtype)
        for ops, inputs in zip(self.ops, self.inputs, strict=True):
            states.append(sum(op(states[i] * keep, keep) for op, i in zip(ops, inputs, strict=True)) * keep)
        return torch.stack(states[2:]).mean(dim=0)


class AdaBertForSequenceClassification(PreTrainedModel):
    """Embeddings -> linear to the cell width -> `num_cells` cells -> max-pool over real tokens -> logits."""

    config_class = AdaBertConfig
    base_model_prefix = "adabert"

    def __init__(self, config: AdaBertConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.project = nn.Linear(config.embedding_size, config.hidden_size)
        self.layers = nn.ModuleList(_Cell(config.hidden_size, config.genotype) for _ in range(config.num_cells))
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Conv1d):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                **_: Any) -> SequenceClassifierOutput:
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        x = self.project(self.dropout(self.embeddings(input_ids)))
        s0 = s1 = x
        for cell in self.layers:
            s0, s1 = s1, cell(s0, s1, mask)
        h = s1.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(s1.dtype).min).max(dim=1).values
        logits = self.classifier(self.dropout(h))
        loss = None
        if labels is not None:
            loss = (nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype)) if logits.size(-1) == 1
                    else nn.functional.cross_entropy(logits, labels))
        return SequenceClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(AdaBertConfig.model_type, AdaBertConfig)
AutoModelForSequenceClassification.register(AdaBertConfig, AdaBertForSequenceClassification)
