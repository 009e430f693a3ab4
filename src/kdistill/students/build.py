"""Building a student: keep chosen teacher layers (DistilBERT init), optionally narrowed by weight selection, shrink
a config, or load a folder."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from kdistill.config import StudentConfig
from kdistill.distill.mapping import uniform_map
from kdistill.errors import KDistillError
from kdistill.models import auto_class, load_classifier, probe
from kdistill.tasks import get_task, task_of_config


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


def slice_width(model: PreTrainedModel, hidden: int, heads: int | None = None, ffn: int | None = None
                ) -> PreTrainedModel:
    """A narrower copy whose every tensor is the leading block of the wider one's (weight selection, Xu et al. 2023).

    Leading slices keep the first `heads` attention heads whole (the head size stays) and the first `hidden` residual
    and `ffn` feed-forward units, the same units in every layer, so the narrow model starts as a coherent
    sub-network of the pretrained one instead of from noise (a 192-wide random student learned only the majority class
    on MRPC and RTE here). Tensors with no counterpart keep their fresh init.
    """
    c = model.config
    wide, wide_heads = int(c.hidden_size), int(c.num_attention_heads)
    head_dim = wide // wide_heads
    if hidden > wide:
        raise KDistillError(f"student.hidden_size {hidden} is wider than the teacher ({wide}); a teacher_layers "
                            "student can only be narrowed (use student.init: config for a wider random model)")
    if hidden % head_dim:
        raise KDistillError(f"student.hidden_size {hidden} must be a multiple of the teacher's head size {head_dim}: "
                            "a narrowed student keeps whole teacher heads")
    heads = heads or hidden // head_dim
    if heads * head_dim != hidden:
        raise KDistillError(f"student.num_heads {heads} x the teacher's head size {head_dim} != student.hidden_size "
                            f"{hidden}: a narrowed student keeps whole teacher heads (leave num_heads unset)")
    wide_ffn = int(getattr(c, "intermediate_size", None) or getattr(c, "hidden_dim", 4 * wide))
    ffn = ffn or wide_ffn * hidden // wide
    if ffn > wide_ffn:
        raise KDistillError(f"student.intermediate_size {ffn} is wider than the teacher's {wide_ffn}")
    conf = _shrunk_config(c, None, hidden, heads, ffn)
    conf.kdistill_init = {**dict(getattr(c, "kdistill_init", None) or {}), "width": "leading slice",
                          "hidden_size": hidden, "num_heads": heads, "intermediate_size": ffn}
    narrow = type(model)(conf)
    source = model.state_dict()
    with torch.no_grad():
        for name, p in narrow.state_dict().items():
            t = source.get(name)
            if t is not None and t.dim() == p.dim() and all(a <= b for a, b in zip(p.shape, t.shape, strict=True)):
                p.copy_(t[tuple(slice(0, n) for n in p.shape)])
    return narrow


def _shrunk_config(config: Any, layers: int | None, hidden: int, heads: int, ffn: int) -> Any:
    conf = copy.deepcopy(config)
    if layers:
        conf.num_hidden_layers = layers
    conf.hidden_size = hidden
    conf.num_attention_heads = heads
    if hasattr(conf, "intermediate_size"):
        conf.intermediate_size = ffn
    elif hasattr(conf, "hidden_dim"):
        conf.hidden_dim = ffn
    return conf


def from_smaller_config(teacher: PreTrainedModel, cfg: StudentConfig, auto: Any = AutoModelForSequenceClassification
                        ) -> PreTrainedModel:
    """A randomly initialised model of the teacher's family and vocabulary, but smaller (`auto` picks the head)."""
    hidden = cfg.hidden_size or teacher.config.hidden_size
    heads = cfg.num_heads or teacher.config.num_attention_heads
    if hidden % heads:
        raise KDistillError(f"student.hidden_size {hidden} is not a multiple of student.num_heads {heads}")
    conf = _shrunk_config(teacher.config, cfg.num_layers, hidden, heads, cfg.intermediate_size or 4 * hidden)
    conf.kdistill_init = {"from": "config"}
    return auto.from_config(conf)


def build_student(cfg: StudentConfig, teacher: PreTrainedModel, *, single_sentence: bool,
                  tokenizer: Any = None) -> PreTrainedModel:
    """The one entry point: the config says how, the teacher gives family, vocabulary and labels.

    `tokenizer` (the teacher's) is needed only for a bilstm/cnn student with word vectors (`student.embeddings`):
    its vocabulary says which word each embedding row is. The student's head is the teacher's task head (sequence or
    token classification, question answering); a kind of student that cannot have it is refused
    (`Task.check_student`).
    """
    if cfg.embeddings != "teacher" and cfg.init not in ("bilstm", "cnn"):
        raise KDistillError(f"student.embeddings '{cfg.embeddings}' is for bilstm and cnn students; a "
                            f"'{cfg.init}' student keeps its transformer embeddings (set student.embeddings: teacher)")
    task = get_task(task_of_config(teacher.config))  # the student's head answers as the teacher's
    task.check_student(cfg.init)
    if cfg.init == "path":
        assert cfg.path is not None
        student = load_classifier(cfg.path, num_labels=teacher.config.num_labels,
                                  label_names=[teacher.config.id2label[i] for i in range(teacher.config.num_labels)],
                                  task=task)
        return student
    if cfg.init == "config":
        return from_smaller_config(teacher, cfg, auto=auto_class(task.head))
    if cfg.init == "mobilebert":
        from kdistill.students.mobilebert import MobileBertSpec, mobilebert_student

        width = cfg.hidden_size or 256
        spec = MobileBertSpec(num_layers=cfg.num_layers or 6, hidden_size=width,
                              intra_bottleneck_size=cfg.intra_bottleneck_size or max(1, width // 4),
                              num_heads=cfg.num_heads or 4, intermediate_size=cfg.intermediate_size or width,
                              num_feedforward_networks=cfg.num_feedforward_networks or 2,
                              embedding_size=cfg.embedding_size or 128)
        return mobilebert_student(teacher, spec)
    if cfg.init in ("bilstm", "cnn"):
        from kdistill.students.rnn import simple_student

        vocab = None
        if cfg.embeddings != "teacher":
            if tokenizer is None:
                raise KDistillError(f"student.embeddings '{cfg.embeddings}' needs the teacher's tokenizer: "
                                    "pass build_student(..., tokenizer=...)")
            vocab = tokenizer.get_vocab()
        return simple_student(cfg.init, teacher, cfg.hidden_size, embeddings=cfg.embeddings, vocab=vocab)
    n_t = probe(teacher).num_layers
    if not cfg.layers and cfg.num_layers and cfg.num_layers > n_t:
        raise KDistillError(f"student.num_layers is {cfg.num_layers} but the teacher has {n_t} layers: a student "
                            f"built from teacher layers has at most {n_t} (student.init config builds a deeper one)")
    layers = cfg.layers or default_layers(n_t, cfg.num_layers or max(1, n_t // 2))
    student = from_teacher_layers(teacher, layers, single_sentence=single_sentence,
                                  drop_token_types=cfg.drop_token_types)
    return narrowed(student, cfg)


def narrowed(student: PreTrainedModel, cfg: StudentConfig) -> PreTrainedModel:
    """A teacher_layers student with `hidden_size` below the teacher's is narrowed by weight selection."""
    if cfg.hidden_size and cfg.hidden_size != student.config.hidden_size:
        return slice_width(student, cfg.hidden_size, cfg.num_heads, cfg.intermediate_size)
    if cfg.num_heads or cfg.intermediate_size:
        raise KDistillError("student.num_heads / student.intermediate_size need student.hidden_size below the "
                            "teacher's for a teacher_layers student (or student.init: config)")
    return student
