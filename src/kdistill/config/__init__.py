"""Typed configs: one pydantic model per command; YAML loads into them and every CLI flag is one field.

Every model forbids unknown fields, so a typo in YAML or a flag is an error naming the field path,
not a silently ignored setting.

The models live in `sections` (data, train, losses, ...) and `commands` (one per CLI command); `io` reads YAML.
Everything is re-exported here, so `from kdistill.config import DistillConfig` is the way to import them.
"""

from kdistill.config.base import DEFAULT_TEACHER, StrictConfig
from kdistill.config.commands import (
    AugmentConfig,
    BenchConfig,
    DistillConfig,
    EvaluateConfig,
    ExportConfig,
    FinetuneConfig,
    GeneralConfig,
    GenerateConfig,
    LabelConfig,
    MLMHeadConfig,
    ReportConfig,
    RunConfig,
    SearchConfig,
)
from kdistill.config.io import (
    build,
    format_validation_error,
    load_config,
    load_yaml,
    merge_dicts,
    parse_yaml,
    save_config,
    with_section_defaults,
    yaml_error_line,
)
from kdistill.config.sections import (
    CorpusConfig,
    DataConfig,
    LossConfig,
    MappingConfig,
    ScheduleConfig,
    StageConfig,
    StudentConfig,
    TrainConfig,
)

__all__ = [
    "DEFAULT_TEACHER", "StrictConfig", "AugmentConfig", "BenchConfig", "DistillConfig", "EvaluateConfig",
    "ExportConfig", "FinetuneConfig", "GenerateConfig", "GeneralConfig", "LabelConfig", "MLMHeadConfig",
    "ReportConfig", "RunConfig", "SearchConfig", "build", "format_validation_error", "load_config", "load_yaml",
    "merge_dicts", "parse_yaml", "save_config", "with_section_defaults", "yaml_error_line", "CorpusConfig",
    "DataConfig",
    "LossConfig", "MappingConfig", "ScheduleConfig", "StageConfig", "StudentConfig", "TrainConfig",
]
