"""General distillation, `mlm-head`, and multi-stage (TinyBERT) task distillation on tiny models."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import DATA, write_vocab
from safetensors.torch import load_file

from kdistill import api
from kdistill.cli import main
from kdistill.config import DistillConfig, GeneralConfig, MLMHeadConfig, build
from kdistill.errors import KDistillError
from kdistill.models import load_classifier


def corpus(tmp: Path, n: int = 400) -> Path:
    """Real text: SST-2 sentences, a few per line (paragraphs)."""
    with open(DATA / "sst2" / "train.tsv", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t")
        next(rows)
        sents = [r[0] for _, r in zip(range(n), rows, strict=False)]
    p = tmp / "corpus.txt"
    p.write_text("\n".join(" ".join(sents[i:i + 4]) for i in range(0, len(sents), 4)) + "\n\n")
    return p


def tiny_encoder(out: Path, *, mlm: bool, seed: int = 0) -> Path:
    from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    write_vocab(out / "vocab.txt")
    tok = BertTokenizerFast.from_pretrained(str(out), do_lower_case=True)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    (BertForMaskedLM(cfg) if mlm else BertModel(cfg)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def train(**kw) -> dict:
    return {"epochs": 2, "batch_size": 8, "eval_batch_size": 16, "lr": 1e-3, "progress": False,
            "save_steps": 1000, "device": "cpu", **kw}


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def mlm_teacher(tmp_path_factory: pytest.TempPathFactory, text: Path) -> tuple[Path, dict]:
    """A headless tiny encoder, then `mlm-head` fits its head: the general teacher of the tests below."""
    root = tmp_path_factory.mktemp("mlmhead")
    enc = tiny_encoder(root / "encoder", mlm=False)
    cfg = build(MLMHeadConfig, {"encoder": str(enc), "out": str(root / "teacher"),
                                "corpus": {"files": [str(text)], "max_length": 32, "validation_fraction": 0.1},
                                "train": train(epochs=3, lr=3e-3)})
    return root / "teacher", api.mlm_head(cfg)


def test_mlm_head_fits_only_the_head_and_accuracy_rises(mlm_teacher: tuple[Path, dict]) -> None:
    folder, summary = mlm_teacher
    assert summary["after"]["mlm_accuracy"] > summary["before"]["mlm_accuracy"] + 0.05
    assert summary["after"]["mlm_loss"] < summary["before"]["mlm_loss"]
    assert set(summary["trained"]) == {"cls.predictions.bias", "cls.predictions.transform.dense.weight",
                                       "cls.predictions.transform.dense.bias",
                                       "cls.predictions.transform.LayerNorm.weight",
                                       "cls.predictions.transform.LayerNorm.bias"}
    encoder = load_file(str(folder.parent / "encoder" / "model.safetensors"))
    fitted = load_file(str(folder / "model.safetensors"))
    for k, v in encoder.items():  # the encoder is frozen: every weight saved back unchanged
        if k.startswith("pooler."):
            continue  # a masked LM has no pooler
        assert torch.equal(fitted[f"bert.{k}" if f"bert.{k}" in fitted else k], v), k
    from kdistill.mlm import load_masked_lm

    model = load_masked_lm(str(folder))
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    assert json.loads((folder / "metrics.json").read_text())["after"] == summary["after"]


@pytest.mark.parametrize("method", ["triple", "intermediate"])
def test_general_distillation_loss_goes_down(mlm_teacher: tuple[Path, dict], text: Path, tmp_path: Path,
                                             method: str) -> None:
    totals: list[float] = []
    cfg = build(GeneralConfig, {"teacher": str(mlm_teacher[0]), "method": method, "out": str(tmp_path / "g"),
                                "student": {"num_layers": 2},
                                "corpus": {"files": [str(text)], "max_length": 32, "validation_fraction": 0.1,
                                           "max_blocks": 240},
                                "train": train(epochs=3)})
    from kdistill.general import general_distill

    original = api.Distiller.train

    def spy(self):  # record the total loss of every step through the run's own callback hook
        self.callbacks.append(lambda d: totals.append(d.last_loss))
        return original(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(api.Distiller, "train", spy)
        summary = general_distill(cfg)
    assert len(totals) >= 30
    k = len(totals) // 4
    # a student copied from teacher layers starts close; the vocabulary-wide terms of "triple" fall slowly
    assert sum(totals[-k:]) / k < 0.95 * sum(totals[:k]) / k
    terms = {"triple": "5*kl[T=2] + 2*ce + 1*hidden_cosine[layers 2<-4]",
             "intermediate": "1*embedding_mse[layers 0<-0] + 1*attn_mse[layers 1<-2, 2<-4] + "
                             "1*hidden_mse[layers 1<-2, 2<-4]"}
    assert summary["objective"] == terms[method]
    assert summary["masking"] == (0.15 if method == "triple" else 0.0)
    assert general_distill(cfg)["validation"] == summary["validation"]  # a finished run is not redone
    # the general student is an ordinary folder that a task run takes as its student
    student = load_classifier(str(tmp_path / "g"), num_labels=2, label_names=["negative", "positive"])
    assert student.config.num_hidden_layers == 2


def test_two_stage_task_distillation_resumes_between_stages(tmp_path: Path, tiny_teacher: Path, tiny_data: dict,
                                                            fast_train: dict) -> None:
    stages = [{"name": "intermediate", "epochs": 1, "lr": 1e-3,
               "losses": [{"name": "embedding_mse"}, {"name": "attn_mse"}, {"name": "hidden_mse"}]},
              {"name": "prediction", "epochs": 2, "lr": 5e-4, "losses": [{"name": "soft_ce"}]}]

    def cfg(out: Path) -> DistillConfig:
        return build(DistillConfig, {"teacher": str(tiny_teacher), "student": {"num_layers": 2}, "data": tiny_data,
                                     "train": fast_train, "out": str(out), "stages": stages})

    whole = api.distill(cfg(tmp_path / "whole"))
    assert [s["stage"] for s in whole["stages"]] == ["intermediate", "prediction"]
    assert "test" in whole and whole["wall_seconds"] > 0

    class Stop(Exception):
        pass

    def stop_in_stage_two(d) -> None:
        if d.out == tmp_path / "cut":  # the last stage writes to OUT itself
            raise Stop

    with pytest.raises(Stop):
        api.distill(cfg(tmp_path / "cut"), callbacks=[stop_in_stage_two])
    stage_one = tmp_path / "cut" / "stages" / "1-intermediate" / "model.safetensors"
    before = stage_one.stat().st_mtime_ns
    resumed = api.distill(cfg(tmp_path / "cut"))
    assert stage_one.stat().st_mtime_ns == before  # the finished stage was not trained again
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test"] == whole["test"]


def test_stages_share_one_teacher_cache(tmp_path: Path, tiny_teacher: Path, tiny_data: dict,
                                        fast_train: dict) -> None:
    """The prediction stage needs only logits: the intermediate stage's cache (a superset) answers for it."""
    stages = [{"name": "intermediate", "epochs": 1, "losses": [{"name": "attn_mse"}, {"name": "hidden_mse"}]},
              {"name": "prediction", "epochs": 1, "losses": [{"name": "soft_ce"}]}]
    root = tmp_path / "cache"
    s = api.distill(build(DistillConfig, {"teacher": str(tiny_teacher), "student": {"num_layers": 2},
                                          "data": tiny_data, "train": fast_train, "out": str(tmp_path / "run"),
                                          "stages": stages, "teacher_cache": str(root)}))
    first, second = (st["teacher_cache"] for st in s["stages"])
    assert first["built"] and first["build_seconds"] > 0
    assert not second["built"] and second["folder"] == first["folder"]
    assert [p.name for p in root.iterdir()] == [Path(first["folder"]).name]


def test_stage_and_general_configs_are_validated(tmp_path: Path) -> None:
    tb = build(DistillConfig, {"stages": "tinybert"})
    assert [(s.name, s.epochs, s.lr) for s in tb.stages] == [("intermediate", 20, 5e-5), ("prediction", 3, 3e-5)]
    with pytest.raises(KDistillError, match="stage names repeat"):
        build(DistillConfig, {"stages": [{"name": "a", "losses": [{"name": "ce"}]},
                                         {"name": "a", "losses": [{"name": "ce"}]}]})
    with pytest.raises(KDistillError, match="stages.0.name"):
        build(DistillConfig, {"stages": [{"name": "a/b", "losses": [{"name": "ce"}]}]})
    with pytest.raises(KDistillError, match="method 'custom' needs losses"):
        build(GeneralConfig, {"method": "custom"})
    with pytest.raises(KDistillError, match="student"):
        build(GeneralConfig, {"student": {"init": "bilstm"}})


def test_cli_general_and_mlm_head_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["general", "--teacher", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdistill: error:") and "Traceback" not in err
    assert main(["mlm-head", "--corpus.files", f"[{tmp_path / 'none.txt'}]", "--out", str(tmp_path / "o")]) == 2
    assert "corpus file not found" in capsys.readouterr().err
