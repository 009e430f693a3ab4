"""kdistill: knowledge distillation for BERT-family encoders."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["DistillSpec", "KDTrainer", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import kdistill` (and the CLI's start) does not import transformers.Trainer.
    if name in ("KDTrainer", "DistillSpec"):
        from kdistill.distill import kdtrainer

        return getattr(kdtrainer, name)
    raise AttributeError(f"module 'kdistill' has no attribute {name!r}")
