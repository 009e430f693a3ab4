"""Add distillation to a Hugging Face Trainer script: swap `Trainer` for `kdistill.KDTrainer` and give it a teacher.

    python examples/trainer_distill.py --teacher runs/teacher --out runs/trainer-student

`--teacher` is a fine-tuned classifier folder (e.g. the one `kdistill run` writes to runs/teacher). The student is
its layers 2, 4 and 6 (as `kdistill distill`'s default); the data is the shipped SST-2. Everything else is an
ordinary Trainer script: TrainingArguments, datasets, callbacks, `resume_from_checkpoint` and `save_model` work as
usual, and the loss terms appear in the logs as `kd/<term>`.
"""

from __future__ import annotations

import argparse

from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

from kdistill import KDTrainer
from kdistill.config import DataConfig, StudentConfig
from kdistill.data import load_task_data
from kdistill.students.build import build_student
from kdistill.tokenized import tokenize_splits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", default="runs/teacher")
    ap.add_argument("--out", default="runs/trainer-student")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-train", type=int, default=None, help="use only N training examples")
    args = ap.parse_args()

    teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher)
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    student = build_student(StudentConfig(num_layers=3), teacher, single_sentence=True)  # or any model of yours
    data = load_task_data(DataConfig(task="sst2", max_length=64, max_train_examples=args.max_train))
    splits = tokenize_splits(data, tokenizer, 64)  # any tokenized datasets.Dataset works here

    trainer = KDTrainer(
        model=student,
        teacher=teacher,
        distill={"losses": [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5},
                            {"name": "hidden_mse"}]},
        args=TrainingArguments(output_dir=args.out, num_train_epochs=args.epochs, per_device_train_batch_size=32,
                               per_device_eval_batch_size=64, learning_rate=1e-4, warmup_steps=0.1,
                               eval_strategy="epoch", logging_steps=20, save_strategy="epoch", report_to=[]),
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        processing_class=tokenizer,
        compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())},
    )
    trainer.train()
    trainer.save_model(args.out)  # the student alone: AutoModelForSequenceClassification / pipeline() load it
    print(trainer.evaluate())


if __name__ == "__main__":
    main()
