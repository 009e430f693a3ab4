"""Config sections shared by several commands: data, training, layer maps, losses, schedules, students, stages,
the pretraining corpus."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from kdistill.config.base import StrictConfig


class DataConfig(StrictConfig):
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
        files = bool(self.train_file or self.validation_file or self.test_file)
        sources = [self.task is not None and not files and not self.dataset, files, bool(self.dataset)]
        if sum(sources) == 0:
            raise ValueError("give one of data.task, data.train_file or data.dataset")
        if self.dataset and (self.validation_file or self.test_file):
            raise ValueError("data.validation_file and data.test_file go with data.train_file, not data.dataset")
        if self.train_file and self.dataset:
            raise ValueError("give data.train_file or data.dataset, not both")
        if self.text_columns is not None and not 1 <= len(self.text_columns) <= 2:
            raise ValueError("data.text_columns takes one column or a pair")
        return self


class TrainConfig(StrictConfig):
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


class MappingConfig(StrictConfig):
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


class LossConfig(StrictConfig):
    """One named, weighted loss term; the name picks a loss from `kdistill.distill.losses.LOSSES`."""

    name: str = Field(description="loss name (kl, soft_ce, logit_mse, ce, hidden_mse, ...)")
    weight: float = Field(1.0, ge=0, description="weight in the total loss")
    temperature: float = Field(1.0, gt=0, description="softmax temperature for soft-target losses")
    mapping: MappingConfig | None = Field(None, description="layer map for this term (else the run's)")
    params: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments of the loss")


class ScheduleConfig(StrictConfig):
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


_SIZING = ("layers", "num_layers", "hidden_size", "num_heads", "intermediate_size", "intra_bottleneck_size",
           "num_feedforward_networks", "embedding_size")
"""Student fields that shape a built student; a loaded one (`init: path`) keeps its own."""


class StudentConfig(StrictConfig):
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
        if self.init == "path":
            # the folder's model is used as it is: a size given beside it would be recorded but never applied
            sized = [k for k in _SIZING if getattr(self, k) != StudentConfig.model_fields[k].default]
            if sized:
                them = "them" if len(sized) > 1 else "it"
                raise ValueError(f"{', '.join('student.' + k for k in sized)} cannot apply to student.init 'path' "
                                 f"(the folder's model is used as it is): drop {them}, or build the student with "
                                 "student.init teacher_layers / config")
        return self


class StageConfig(StrictConfig):
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


def tinybert_stages() -> list[StageConfig]:
    """TinyBERT's task distillation: 20 epochs of intermediate losses at 5e-5, 3 of soft CE at 3e-5."""
    return [StageConfig(name="intermediate", epochs=20, lr=5e-5, losses=[
                LossConfig(name="embedding_mse"), LossConfig(name="attn_mse"), LossConfig(name="hidden_mse")]),
            StageConfig(name="prediction", epochs=3, lr=3e-5, losses=[LossConfig(name="soft_ce", temperature=1.0)])]


class CorpusConfig(StrictConfig):
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


