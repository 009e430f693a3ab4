"""MobileBERT-style students (Sun et al. 2020, "MobileBERT: a Compact Task-Agnostic BERT for Resource-Limited
Devices"), built from a size spec over the teacher's vocabulary with transformers' own `MobileBert*` classes.

A MobileBERT layer keeps a wide inter-block state (`hidden_size`, what the feature-map transfer compares with the
teacher's hidden states) and computes attention and `num_feedforward_networks` stacked feed-forward networks in a
narrow bottleneck (`intra_bottleneck_size`), with `NoNorm` (an element-wise affine map) instead of LayerNorm.
Embeddings are factorised: `embedding_size`-wide word vectors, the trigram convolution of the paper (each position
sees its neighbours' vectors concatenated), then a linear map to `hidden_size`.

The word vectors start from the teacher's, reduced to `embedding_size` by a truncated SVD of the teacher's
embedding matrix (the best rank-`embedding_size` approximation of its rows): a start that keeps the teacher's
geometry between words, where the paper starts from its pretraining instead. Everything else is randomly initialised,
as in the paper's students before knowledge transfer. The model is an ordinary `MobileBertForSequenceClassification`,
so `AutoModelForSequenceClassification` and `pipeline()` load it, and ONNX export, bench and report treat it like
any student.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import MobileBertConfig, MobileBertForSequenceClassification, PreTrainedModel

from kdistill.errors import KDistillError

__all__ = ["MobileBertSpec", "mobilebert_student", "svd_embeddings"]


@dataclass(frozen=True)
class MobileBertSpec:
    """The student's size. Defaults are a quarter of the paper's MobileBERT (24 layers, 512 wide, bottleneck 128,
    4 heads, 4 FFNs, embeddings 128), scaled to be 3-10x faster than a 6-layer, 384-wide teacher on a CPU."""

    num_layers: int = 6
    hidden_size: int = 256
    intra_bottleneck_size: int = 64
    num_heads: int = 4
    intermediate_size: int = 256
    num_feedforward_networks: int = 2
    embedding_size: int = 128


def svd_embeddings(weight: torch.Tensor, size: int) -> torch.Tensor:
    """(V, H) teacher word vectors -> (V, size): the rows' coordinates on the top `size` right singular vectors,
    rescaled to the teacher rows' standard deviation. Raises `KDistillError` when `size` exceeds H."""
    if size > weight.size(1):
        raise KDistillError(f"student.embedding_size {size} is wider than the teacher's embeddings ({weight.size(1)})")
    w = weight.detach().float()
    _, _, v = torch.linalg.svd(w - w.mean(dim=0), full_matrices=False)
    reduced = w @ v[:size].T
    return reduced * (w.std() / reduced.std().clamp_min(1e-12))


def mobilebert_student(teacher: PreTrainedModel, spec: MobileBertSpec) -> MobileBertForSequenceClassification:
    """A randomly initialised MobileBERT-style classifier over the teacher's vocabulary and labels.

    Raises `KDistillError` when the bottleneck is not a multiple of the head count or a size is not positive.
    """
    if min(spec.num_layers, spec.hidden_size, spec.intra_bottleneck_size, spec.num_heads, spec.intermediate_size,
           spec.num_feedforward_networks, spec.embedding_size) <= 0:
        raise KDistillError(f"every MobileBERT student size must be positive: {spec}")
    if spec.intra_bottleneck_size % spec.num_heads:
        raise KDistillError(f"student.intra_bottleneck_size {spec.intra_bottleneck_size} is not a multiple of "
                            f"student.num_heads {spec.num_heads}")
    t = teacher.config
    cfg = MobileBertConfig(
        vocab_size=t.vocab_size, hidden_size=spec.hidden_size, embedding_size=spec.embedding_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size, intra_bottleneck_size=spec.intra_bottleneck_size,
        true_hidden_size=spec.intra_bottleneck_size, num_feedforward_networks=spec.num_feedforward_networks,
        use_bottleneck=True, key_query_shared_bottleneck=True, normalization_type="no_norm", trigram_input=True,
        max_position_embeddings=getattr(t, "max_position_embeddings", 512),
        type_vocab_size=max(2, getattr(t, "type_vocab_size", 2)), pad_token_id=t.pad_token_id or 0,
        num_labels=t.num_labels, id2label=t.id2label, label2id=t.label2id, problem_type=t.problem_type,
        architectures=["MobileBertForSequenceClassification"])
    model = MobileBertForSequenceClassification(cfg)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(svd_embeddings(teacher.get_input_embeddings().weight,
                                                                 spec.embedding_size))
    return model
