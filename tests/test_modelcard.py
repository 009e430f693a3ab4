"""Model cards: front matter the Hub tooling parses, and a readable body."""

from __future__ import annotations

import pytest
import yaml

from kdistill.modelcard import hub_model_id, write_model_card
from kdistill.speed import SpeedResult

CONFIG_YAML = "method: logits\ntemperature: 2.0\nstudent:\n  layers: 4\n"


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    head, _, _ = text[4:].partition("\n---\n")
    return yaml.safe_load(head)


def _write(tmp_path, **kw):
    args = dict(
        base_model="google-bert/bert-base-uncased",
        method="logits",
        task="sst2",
        metrics={"accuracy": 0.861, "eval_loss": 0.31},
        teacher_metrics={"accuracy": 0.875},
        params=11_000_000,
        teacher_params=110_000_000,
        speed=[
            SpeedResult(1, 64, 2.0, 2.5, 2.1, 476.2).to_dict(),
            SpeedResult(32, 64, 20.0, 22.0, 20.5, 1561.0).to_dict(),
        ],
        config_yaml=CONFIG_YAML,
        extra="Trained on a laptop.",
    )
    args.update(kw)
    return write_model_card(tmp_path / "sst2-student", **args)


def test_front_matter_has_required_keys(tmp_path) -> None:
    path = _write(tmp_path)
    assert path == tmp_path / "sst2-student" / "README.md"
    meta = _front_matter(path.read_text())
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-classification"
    assert {"kdistill", "knowledge-distillation"} <= set(meta["tags"])
    assert meta["base_model"] == "google-bert/bert-base-uncased"
    # shipped SST-2 is scored on SST's own test split, not GLUE's validation set: the card says so
    assert "datasets" not in meta
    (entry,) = meta["model-index"]
    assert entry["name"] == "sst2-student"
    (result,) = entry["results"]
    assert result["task"]["type"] == "text-classification"
    assert result["dataset"] == {"name": "SST-2 (SentEval split)", "type": "sst2", "split": "test"}
    assert result["metrics"] == [{"type": "accuracy", "value": 0.861, "name": "Accuracy"}]  # no loss


def test_glue_dev_tasks_point_at_glue_validation(tmp_path) -> None:
    path = write_model_card(tmp_path / "mrpc", base_model="minilm", method="kd", task="mrpc",
                            metrics={"f1": 0.88, "accuracy": 0.84})
    meta = _front_matter(path.read_text())
    assert meta["datasets"] == ["nyu-mll/glue"]
    dataset = meta["model-index"][0]["results"][0]["dataset"]
    assert dataset["config"] == "mrpc" and dataset["split"] == "validation"


def test_scores_of_a_capped_split_say_which_rows(tmp_path) -> None:
    """`data.max_eval_examples 100`: the card must not pass 100 sentences off as SST-2's whole test split."""
    capped = _write(tmp_path, eval_cap=100).read_text()
    result = _front_matter(capped)["model-index"][0]["results"][0]
    assert result["dataset"]["split"] == "test[:100]"
    assert "Scored on the first 100 examples of the split only (`data.max_eval_examples`)" in capped
    whole = (tmp_path / "whole").mkdir() or _write(tmp_path / "whole").read_text()
    assert _front_matter(whole)["model-index"][0]["results"][0]["dataset"]["split"] == "test"
    assert "Scored on the first" not in whole


def test_body_has_retention_compression_speed_and_config(tmp_path) -> None:
    text = _write(tmp_path).read_text()
    body = text.split("\n---\n", 1)[1]
    assert "google-bert/bert-base-uncased" in body and "`logits`" in body
    assert "98.4%" in body  # 0.861 / 0.875
    assert "10.0x" in body  # 110M / 11M parameters
    assert "| Batch" in body and "1561.0" in body
    assert "```yaml\n" + CONFIG_YAML in body
    assert body.rstrip().endswith("Trained on a laptop.")


def test_huggingface_hub_reads_the_card(tmp_path) -> None:
    hub = pytest.importorskip("huggingface_hub")
    path = _write(tmp_path, task="cola", metrics={"matthews": 0.41, "accuracy": 0.8}, teacher_metrics=None)
    card = hub.ModelCard.load(path)
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    index = data["model-index"]
    metrics = index[0]["results"][0]["metrics"]
    assert {m["type"] for m in metrics} == {"matthews_correlation", "accuracy"}
    assert index[0]["results"][0]["dataset"]["config"] == "cola"


def test_local_base_model_and_custom_task(tmp_path) -> None:
    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir()
    path = _write(tmp_path, base_model=str(teacher_dir), task="my_reviews", teacher_metrics=None,
                  teacher_params=None, speed=None, config_yaml=None, extra=None)
    meta = _front_matter(path.read_text())
    assert "base_model" not in meta  # a local path is not a Hub id
    assert "datasets" not in meta
    assert meta["model-index"][0]["results"][0]["dataset"] == {"name": "my_reviews", "type": "my_reviews"}
    body = path.read_text().split("\n---\n", 1)[1]
    assert "## Speed" not in body and "```yaml" not in body


def test_hub_model_id(tmp_path) -> None:
    assert hub_model_id("minilm") == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_model_id("bert-base-uncased") == "bert-base-uncased"
    assert hub_model_id("./runs/teacher") is None
    assert hub_model_id("/abs/path/model") is None
    assert hub_model_id("a/b/c") is None
    assert hub_model_id(str(tmp_path)) is None


def test_usage_loads_the_folder_by_its_real_path_and_names_where_the_teacher_was(tmp_path, monkeypatch) -> None:
    """Relative names in a card mean nothing once it is read elsewhere: the folder and teacher get absolute paths."""
    import json

    monkeypatch.chdir(tmp_path)
    teacher = tmp_path / "runs" / "teacher"
    teacher.mkdir(parents=True)
    (teacher / "metrics.json").write_text(json.dumps({"base_model": "sentence-transformers/all-MiniLM-L6-v2"}))
    path = write_model_card("runs/student", base_model="runs/teacher", method="kd", task="sst2",
                            metrics={"accuracy": 0.86})
    body = path.read_text().split("\n---\n", 1)[1]
    student = (tmp_path / "runs" / "student").resolve()
    assert f'pipeline("text-classification", model="{student}")' in body
    assert 'model="student"' not in body and "Hub id" in body
    assert f"from the local model folder `{teacher.resolve()}` (on the machine that trained it), itself fine-tuned " \
           "from `sentence-transformers/all-MiniLM-L6-v2`," in body
    assert "base_model" not in _front_matter(path.read_text())  # still no local path in the Hub metadata


def test_hub_teacher_is_named_by_its_hub_id(tmp_path) -> None:
    body = _write(tmp_path, base_model="minilm").read_text().split("\n---\n", 1)[1]
    assert "from `sentence-transformers/all-MiniLM-L6-v2` using the `logits` method" in body
    assert "local model folder" not in body
