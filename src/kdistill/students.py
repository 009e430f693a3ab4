"""Building a student: keep chosen teacher layers (DistilBERT init), shrink a config, or load a folder."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from kdistill.config import StudentConfig
from kdistill.errors import KDistillError
from kdistill.mapping import uniform_map
from kdistill.models import load_classifier, probe


def default_layers(n_teacher: int, n_student: int) -> list[int]:
    """Evenly spread teacher layers, top one included: the same choice as the uniform layer map."""
    return [p.teacher[-1] for p in uniform_map(n_teacher, n_student)]


def from_teacher_layers(teacher: PreTrainedModel, layers: list[int], *, single_sentence: bool,
                        drop_token_types: bool = True) -> PreTrainedModel:
    """Copy the teacher and keep `layers` (1-based); embeddings, pooler and head are copied as they are."""
    info = probe(teacher)
    bad = [i for i in layers if not 1 <= i <= info.num_layers]
    if bad:
        raise KDistillError(f"student.layers names teacher layer(s) {bad}; the teacher has layers "
                            f"1-{info.num_layers}")
    if len(set(layers)) != len(layers):
        raise KDistillError(f"student.layers repeats a layer: {layers}")
    student = copy.deepcopy(teacher)
    parent_path, _, attr = info.layers_path.rpartition(".")
    parent = student.get_submodule(parent_path) if parent_path else student
    old = getattr(parent, attr)
    new = nn.ModuleList([old[i - 1] for i in layers])
    setattr(parent, attr, new)
    for idx, layer in enumerate(new):
        for mod in layer.modules():
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = idx
    student.config.num_hidden_layers = len(layers)
    if single_sentence and drop_token_types:
        _keep_one_token_type(student)
    student.config.kdistill_init = {"from": "teacher_layers", "layers": list(layers)}
    return student


def _keep_one_token_type(model: PreTrainedModel) -> None:
    """Single-sentence tasks only ever use token type 0: keep that row and drop the rest."""
    emb = getattr(model.base_model, "embeddings", None)
    tte = getattr(emb, "token_type_embeddings", None)
    if not isinstance(tte, nn.Embedding) or tte.num_embeddings <= 1:
        return
    one = nn.Embedding(1, tte.embedding_dim)
    one.weight.data.copy_(tte.weight.data[:1])
    emb.token_type_embeddings = one
    model.config.type_vocab_size = 1


def from_smaller_config(teacher: PreTrainedModel, cfg: StudentConfig, auto: Any = AutoModelForSequenceClassification
                        ) -> PreTrainedModel:
    """A randomly initialised model of the teacher's family and vocabulary, but smaller (`auto` picks the head)."""
    conf = copy.deepcopy(teacher.config)
    if cfg.num_layers:
        conf.num_hidden_layers = cfg.num_layers
    hidden = cfg.hidden_size or teacher.config.hidden_size
    heads = cfg.num_heads or teacher.config.num_attention_heads
    if hidden % heads:
        raise KDistillError(f"student.hidden_size {hidden} is not a multiple of student.num_heads {heads}")
    conf.hidden_size = hidden
    conf.num_attention_heads = heads
    ffn = cfg.intermediate_size or 4 * hidden
    if hasattr(conf, "intermediate_size"):
        conf.intermediate_size = ffn
    elif hasattr(conf, "hidden_dim"):
        conf.hidden_dim = ffn
    conf.kdistill_init = {"from": "config"}
    return auto.from_config(conf)


def build_student(cfg: StudentConfig, teacher: PreTrainedModel, *, single_sentence: bool,
                  tokenizer: Any = None) -> PreTrainedModel:
    """The one entry point: the config says how, the teacher gives family, vocabulary and labels.

    `tokenizer` (the teacher's) is needed only for a bilstm/cnn student with word vectors (`student.embeddings`):
    its vocabulary says which word each embedding row is.
    """
    if cfg.embeddings != "teacher" and cfg.init not in ("bilstm", "cnn"):
        raise KDistillError(f"student.embeddings '{cfg.embeddings}' is for bilstm and cnn students; a "
                            f"'{cfg.init}' student keeps its transformer embeddings (set student.embeddings: teacher)")
    if cfg.init == "path":
        assert cfg.path is not None
        student = load_classifier(cfg.path, num_labels=teacher.config.num_labels,
                                  label_names=[teacher.config.id2label[i] for i in range(teacher.config.num_labels)])
        return student
    if cfg.init == "config":
        return from_smaller_config(teacher, cfg)
    if cfg.init in ("bilstm", "cnn"):
        from kdistill.rnn_students import simple_student

        vocab = None
        if cfg.embeddings != "teacher":
            if tokenizer is None:
                raise KDistillError(f"student.embeddings '{cfg.embeddings}' needs the teacher's tokenizer: "
                                    "pass build_student(..., tokenizer=...)")
            vocab = tokenizer.get_vocab()
        return simple_student(cfg.init, teacher, cfg.hidden_size, embeddings=cfg.embeddings, vocab=vocab)
    n_t = probe(teacher).num_layers
    layers = cfg.layers or default_layers(n_t, cfg.num_layers or max(1, n_t // 2))
    return from_teacher_layers(teacher, layers, single_sentence=single_sentence,
                               drop_token_types=cfg.drop_token_types)
