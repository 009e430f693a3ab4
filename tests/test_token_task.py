"""Token classification (NER): word-piece alignment, losses, entity F1, files and bad input, and one run end to end.

The run fine-tunes a tiny bare encoder into a token classifier on a slice of the shipped CoNLL-2003, distills a
narrowed student from its output cache (kl + ce + hidden_mse), checks the cached teacher logits against the live
teacher, scores, exports to ONNX with parity, reports, and serves the student with `pipeline("token-classification")`.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, SPECIALS, make_tiny_bert

from kdistill import api, cli
from kdistill.config import (
    AugmentConfig,
    DataConfig,
    DistillConfig,
    EvaluateConfig,
    ExportConfig,
    FinetuneConfig,
    LabelConfig,
    LossConfig,
    MappingConfig,
    ReportConfig,
    StudentConfig,
    TrainConfig,
    build,
)
from kdistill.data import load_task_data
from kdistill.distill.features import FeatureRequest, Features
from kdistill.distill.losses import LOSSES
from kdistill.distill.objective import Objective
from kdistill.errors import KDistillError
from kdistill.metrics import METRICS
from kdistill.models import ModelProbe, load_classifier, load_tokenizer
from kdistill.tasks import detect_file_task, get_task, task_of_config
from kdistill.tasks.token import CONLL2003_TAGS
from kdistill.teachers import CachedTeacher
from kdistill.tokenized import make_loader, tokenize_splits

TAGS = list(CONLL2003_TAGS)
TASK = get_task("token_classification")
TRAIN = {"epochs": 1, "batch_size": 16, "eval_batch_size": 32, "lr": 1e-3, "progress": False, "save_steps": 1000,
         "device": "cpu", "threads": 2}


def _conll(path: Path, sentences: list[list[tuple[str, str]]], extra_columns: bool = True) -> Path:
    lines = []
    for sent in sentences:
        lines += [f"{w} NNP B-NP {t}" if extra_columns else f"{w} {t}" for w, t in sent] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _slice(src: str, n: int, out: Path) -> Path:
    """The first `n` sentences of a shipped CoNLL-2003 file."""
    blocks = (DATA / "conll2003" / src).read_text(encoding="utf-8").split("\n\n")[:n]
    out.write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    return out


@pytest.fixture
def pieces_tokenizer(tmp_path: Path):
    """A WordPiece vocabulary in which "blackburn" is black ##burn and "brussels" bru ##ss ##els."""
    from transformers import BertTokenizerFast

    folder = tmp_path / "tok"
    folder.mkdir()
    words = ["peter", "black", "##burn", "visits", "bru", "##ss", "##els", "."]
    (folder / "vocab.txt").write_text("\n".join(SPECIALS + words) + "\n", encoding="utf-8")
    return BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)


# --------------------------------------------------------------------------------------- alignment


def test_word_pieces_are_aligned_by_hand(pieces_tokenizer) -> None:
    cls, sep = pieces_tokenizer.cls_token_id, pieces_tokenizer.sep_token_id
    vocab = pieces_tokenizer.get_vocab()
    words = ["Peter", "Blackburn", "visits", "Brussels", "."]
    tags = [TAGS.index(t) for t in ("B-PER", "I-PER", "O", "B-LOC", "O")]  # 1, 2, 0, 5, 0
    enc = TASK.encode({"text_a": [words], "label": [tags]}, pieces_tokenizer, max_length=32)
    ids = [cls, *(vocab[p] for p in ["peter", "black", "##burn", "visits", "bru", "##ss", "##els", "."]), sep]
    assert enc["input_ids"] == [ids]
    #                     [CLS] peter black ##burn visits  bru ##ss ##els  .  [SEP]
    assert enc["labels"] == [[-100, 1, 2, -100, 0, 5, -100, -100, 0, -100]]
    assert enc["label_words"] == [[0, 1, 2, 3, 4]] and enc["word_tags"] == [tags]

    # truncated to 6 pieces: "Brussels" and "." are cut; their gold tags stay in word_tags for the metric
    cut = TASK.encode({"text_a": [words], "label": [tags]}, pieces_tokenizer, max_length=6)
    assert cut["labels"] == [[-100, 1, 2, -100, 0, -100]] and cut["label_words"] == [[0, 1, 2]]
    assert cut["word_tags"] == [tags]

    # the collator pads labels with -100 (never a tag id), inputs with the pad id
    rows = [{"input_ids": enc["input_ids"][0], "attention_mask": enc["attention_mask"][0],
             "labels": enc["labels"][0]},
            {"input_ids": cut["input_ids"][0], "attention_mask": cut["attention_mask"][0], "labels": cut["labels"][0]}]
    batch = TASK.collator(pieces_tokenizer)(rows)
    assert batch["labels"][1].tolist() == [-100, 1, 2, -100, 0, -100, -100, -100, -100, -100]
    assert batch["attention_mask"][1].tolist() == [1] * 6 + [0] * 4


def test_a_cut_word_counts_as_predicted_o(pieces_tokenizer) -> None:
    """Scoring reads the encoded split: words without a labelled piece are predicted O, so a cut entity is missed."""
    import datasets

    words = ["Peter", "Blackburn", "visits", "Brussels", "."]
    tags = [1, 2, 0, 5, 0]
    enc = TASK.encode({"text_a": [words], "label": [tags]}, pieces_tokenizer, max_length=6)
    feats = TASK.encoded_features(enc, datasets.Sequence(datasets.ClassLabel(names=TAGS)))
    encoded = datasets.Dataset.from_dict(enc, features=feats)
    logits = np.zeros((1, 6, len(TAGS)))
    for pos, tag in ((1, 1), (2, 2), (4, 0)):  # the model gets every kept word right
        logits[0, pos, tag] = 5.0
    logits[0, [0, 3, 5], 7] = 9.0  # B-MISC at pieces without a label: never read
    metrics = TASK.score("entity_f1", logits, np.array(enc["labels"]), encoded=encoded)
    # gold: PER (0-1), LOC (3); predicted: PER only -> P 1, R 1/2, F1 2/3; tokens right: 4 of 5
    assert metrics == pytest.approx({"entity_f1": 2 / 3, "entity_precision": 1.0, "entity_recall": 0.5,
                                     "token_accuracy": 0.8})


# ------------------------------------------------------------------------------------------ metric


def test_entity_f1_matches_a_hand_computation() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-MISC", "I-MISC"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "B-MISC", "O"]]
    # gold entities PER(0-1) LOC(3) ORG(0) MISC(2-3); predicted PER(0-1) ORG(3) ORG(0) MISC(2): 2 of 4 exact both ways
    assert METRICS.get("entity_f1")(pred, gold) == pytest.approx(
        {"entity_f1": 0.5, "entity_precision": 0.5, "entity_recall": 0.5, "token_accuracy": 6 / 8})
    assert METRICS.get("entity_f1")([["O", "O"]], [["B-PER", "O"]])["entity_f1"] == 0.0  # nothing predicted: 0
    with pytest.raises(KDistillError, match="differ in sentences or words"):
        METRICS.get("entity_f1")([["O"]], [["O", "O"]])


def test_per_type_f1_and_collapse_warning() -> None:
    import datasets

    golds = [[1, 2, 0, 5], [3, 0, 7, 8]]  # PER, LOC | ORG, MISC
    preds = [[1, 2, 0, 3], [3, 0, 7, 0]]  # PER, ORG | ORG, MISC(2-2)
    n = 4
    enc = {"input_ids": [[0] * n] * 2, "labels": golds, "word_tags": golds, "label_words": [list(range(n))] * 2}
    feats = TASK.encoded_features(enc, datasets.Sequence(datasets.ClassLabel(names=TAGS)))
    encoded = datasets.Dataset.from_dict(enc, features=feats)
    logits = np.eye(len(TAGS))[np.array(preds)]
    detail = TASK.detail(logits, np.array(golds), encoded=encoded)
    f1 = {r["type"]: (r["f1"], r["support"]) for r in detail["per_type"]}
    # ORG: predicted 2, 1 right, gold 1 -> P 1/2, R 1 -> F1 2/3; PER exact; LOC missed; MISC wrong span
    assert f1 == {"PER": (1.0, 1), "ORG": (pytest.approx(2 / 3, abs=1e-5), 1), "LOC": (0.0, 1), "MISC": (0.0, 1)}
    caption, headers, rows = TASK.tables(detail, TAGS)[0]
    assert "Per-entity-type F1" in caption and headers[0] == "Type" and len(rows) == 4
    all_o = np.eye(len(TAGS))[np.zeros((2, n), dtype=int)]
    assert "collapsed to tagging every word O" in TASK.collapse_warning(all_o, np.array(golds), encoded=encoded)
    assert TASK.collapse_warning(logits, np.array(golds), encoded=encoded) is None


# ------------------------------------------------------------------------------------------ losses


def test_response_losses_compare_the_labelled_pieces_only() -> None:
    probe = ModelProbe("bert", 2, 8, 2, "bert.encoder.layer", True)
    obj = Objective([LossConfig(name="kl", temperature=2.0), LossConfig(name="ce"), LossConfig(name="logit_mse")],
                    MappingConfig(), student=probe, teacher=probe, task=TASK)
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 3, generator=gen), torch.randn(2, 5, 3, generator=gen)
    labels = torch.tensor([[-100, 2, -100, 0, -100], [-100, 1, 1, -100, -100]])
    keep = labels != -100
    s[~keep], t[~keep] = 1e4, -1e4  # unlabelled pieces (specials, later pieces, padding) must not count
    mask = torch.ones(2, 5)
    out = obj(Features(logits=s, mask=mask), Features(logits=t, mask=mask), labels)
    rs, rt, rl = s[keep].numpy(), t[keep].numpy(), labels[keep].numpy()  # 4 labelled rows

    def log_softmax(x: np.ndarray) -> np.ndarray:
        x = x - x.max(axis=-1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))

    ls, lt = log_softmax(rs / 2), log_softmax(rt / 2)
    kl = (np.exp(lt) * (lt - ls)).sum(axis=-1).mean() * 4  # per labelled token, mean over them, x T²
    ce = -log_softmax(rs)[np.arange(4), rl].mean()
    assert float(out.terms["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(out.terms["ce"]) == pytest.approx(ce, rel=1e-5)
    assert float(out.terms["logit_mse"]) == pytest.approx(((rs - rt) ** 2).mean(), rel=1e-5)
    with pytest.raises(KDistillError, match="compares the teacher's outputs token by token .* different vocab"):
        Objective([LossConfig(name="kl")], MappingConfig(), student=probe, teacher=probe, task=TASK,
                  same_tokens=False)
    valid = set(TASK.valid_losses())  # (other tests may register losses of their own for every task type)
    assert {"ce", "kl", "logit_mse", "soft_ce"} <= valid and not valid & {"mse", "bce", "bce_soft"}


def test_span_targets_get_the_batch_and_pass_their_mask() -> None:
    """The seam a span task (QA) uses: `targets` sees the batch (a column of its own) and returns masked targets,
    one for start and one for end logits; the objective averages a loss over them and passes `mask`."""
    from kdistill.distill.losses import register_loss
    from kdistill.tasks.base import Target, Task

    class Spans(Task):
        name, loss_type, doc = "n19_spans", "n19_spans", "a span task"
        per_token, batch_columns = True, ("span_mask",)

        def targets(self, student, teacher, labels, batch=None):
            mask = batch["span_mask"].bool()
            return [Target(student[..., k], teacher[..., k], labels[:, k], mask=mask) for k in (0, 1)]

    if "n19_masked_mse" not in LOSSES:
        @register_loss("n19_masked_mse", feature="logits", tasks={"n19_spans"})
        def masked_mse(s: torch.Tensor, t: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
            assert mask is not None
            return ((s - t) ** 2)[mask].mean()

    probe = ModelProbe("bert", 2, 8, 2, "bert.encoder.layer", True)
    obj = Objective([LossConfig(name="n19_masked_mse")], MappingConfig(), student=probe, teacher=probe,
                    task=Spans())
    s, t = torch.zeros(2, 4, 2), torch.zeros(2, 4, 2)
    s[0, 1, 0], s[1, 2, 1] = 2.0, 4.0  # inside the mask: start (2 - 0)², end (4 - 0)²
    s[:, 3, :] = 100.0  # outside the mask (a question token, padding): never compared
    span = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])
    out = obj(Features(logits=s, mask=torch.ones(2, 4)), Features(logits=t, mask=torch.ones(2, 4)),
              torch.zeros(2, 2, dtype=torch.long), batch={"span_mask": span})
    assert float(out.terms["n19_masked_mse"]) == pytest.approx((4 / 6 + 16 / 6) / 2)  # mean of start and end


def test_several_teachers_average_per_token() -> None:
    a, b = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    avg = TASK.average_teachers([a, b], [0.25, 0.75])
    assert torch.allclose(avg.softmax(-1), 0.25 * a.softmax(-1) + 0.75 * b.softmax(-1), atol=1e-6)


# --------------------------------------------------------------------------------------- reading


def test_shipped_conll2003() -> None:
    d = load_task_data(DataConfig(task="conll2003"))
    assert (d.task_type, d.metric, d.label_names) == ("token_classification", "entity_f1", TAGS)
    assert {k: len(v) for k, v in d.splits.items()} == {"train": 14041, "validation": 3250, "test": 3453}
    assert sum(len(x) for x in d.splits["train"]["text_a"]) == 203621
    first = d.splits["train"][0]
    assert first["text_a"][:3] == ["EU", "rejects", "German"] and first["label"][:3] == [3, 0, 7]  # B-ORG O B-MISC
    starts = [TAGS[t] for tags in d.splits["test"]["label"] for t in tags if TAGS[t].startswith("B-")]
    assert len(starts) == 5648 and starts.count("B-MISC") == 702  # the README's entity counts


def test_token_files_are_detected_and_read(tmp_path: Path) -> None:
    conll = tmp_path / "ner.txt"
    conll.write_text("-DOCSTART- -X- -X- O\n\nJohn NNP B-NP B-PER\nlives VBZ B-VP O\nin IN B-PP O\n"
                     "Oslo NNP B-NP B-LOC\n\n\nAcme NNP B-NP B-ORG\nInc NNP I-NP I-ORG\n", encoding="utf-8")
    jsonl = tmp_path / "ner.jsonl"
    rows = [{"tokens": ["Ann", "met", "Bob"], "tags": ["B-PER", "O", "B-PER"]},
            {"tokens": ["In", "Rome"], "ner_tags": ["O", "B-LOC"]}]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tsv = tmp_path / "plain.tsv"
    tsv.write_text("sentence\tlabel\ngood film\t1\nbad film\t0\n", encoding="utf-8")
    assert [detect_file_task(p) for p in (conll, jsonl, tsv)] == ["token_classification", "token_classification",
                                                                   None]
    d = load_task_data(DataConfig(task=None, train_file=str(conll), validation_file=str(conll)))
    assert d.task_type == "token_classification" and d.metric == "entity_f1"
    # O first, then each type's B- and I- (I-LOC and I-PER although train has only their B-)
    assert d.label_names == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert d.splits["train"]["text_a"] == [["John", "lives", "in", "Oslo"], ["Acme", "Inc"]]  # DOCSTART skipped
    assert d.splits["train"]["label"] == [[5, 0, 0, 1], [3, 4]]
    j = load_task_data(DataConfig(task=None, train_file=str(jsonl), validation_file=str(jsonl),
                                  label_names=TAGS))
    assert j.label_names == TAGS and j.splits["train"]["label"] == [[1, 0, 1], [0, 5]]


GOOD = "John NNP B-NP B-PER\nlives VBZ B-VP O\nin IN B-PP O\nOslo NNP B-NP B-LOC\n.  . O O\n\n"  # lines 1-6


def test_a_datasets_folder_of_words_and_tag_ids(tmp_path: Path) -> None:
    """Hugging Face's conll2003 layout: `tokens` and `ner_tags` (a sequence of ClassLabel ids)."""
    import datasets

    feats = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                               "ner_tags": datasets.Sequence(datasets.ClassLabel(names=TAGS))})
    split = {"tokens": [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]],
             "ner_tags": [[3, 0, 7, 0], [1, 2]]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(split, features=feats),
                          "validation": datasets.Dataset.from_dict(split, features=feats)}).save_to_disk(tmp_path / "d")
    d = load_task_data(DataConfig(task=None, dataset=str(tmp_path / "d")))
    assert (d.task_type, d.label_names, d.metric) == ("token_classification", TAGS, "entity_f1")
    assert d.splits["validation"]["text_a"][1] == ["Peter", "Blackburn"] and d.splits["train"]["label"][1] == [1, 2]


@pytest.mark.parametrize(("text", "kw", "message"), [
    ("X NNP B-NP B-FOO\n", {"label_names": TAGS}, r"tag 'B-FOO' in .*train.txt line 7 is not in the label set \(O, "),
    ("Ann NNP B-NP B-PER\nlives\n", {}, r"train.txt line 8: token 'lives' has no tag column"),
    ("Ann NNP B-NP B-PER\nlives VBZ O\n", {}, r"train.txt line 8 has 3 columns, line 1 .* has 4"),
    ("Ann NNP B-NP B-PER\n NNP B-NP O\n", {}, r"train.txt line 8: empty token"),
    ("Ann NNP B-NP PER\n", {"task_type": "token_classification"}, r"tag 'PER' in .*train.txt line 7 is not an IOB"),
])
def test_bad_conll_input_is_one_line_naming_the_line(tmp_path: Path, text: str, kw: dict, message: str) -> None:
    f = tmp_path / "train.txt"
    f.write_text(GOOD + text, encoding="utf-8")
    with pytest.raises(KDistillError, match=message) as err:
        load_task_data(DataConfig(task=None, train_file=str(f), validation_file=str(f), **kw))
    assert "\n" not in str(err.value)


def test_a_conll_file_with_a_bad_first_line_names_that_line(tmp_path: Path) -> None:
    """A .conll file is CoNLL whatever its first line holds: the reader names the line, not the file type."""
    f = tmp_path / "train.conll"
    f.write_text("EU\nrejects O\n\nPeter B-PER\n\n", encoding="utf-8")
    with pytest.raises(KDistillError, match=r"train.conll line 1: token 'EU' has no tag column"):
        load_task_data(DataConfig(task=None, train_file=str(f), validation_file=str(f)))


@pytest.mark.parametrize(("row", "message"), [
    ({"tokens": ["Ann", ""], "tags": ["B-PER", "O"]}, r"line 2: token 1 is empty"),
    ({"tokens": ["Ann", "met"], "tags": ["B-PER"]}, r"line 2: 2 tokens but 1 tags"),
    ({"tokens": ["Ann", "met"]}, r"line 2 has tokens but no 'tags'"),
    ({"tokens": ["Ann"], "tags": ["B-XYZ"]}, r"tag 'B-XYZ' in .*dev.jsonl line 2 is not in the label set"),
])
def test_bad_token_jsonl_is_one_line_naming_the_line(tmp_path: Path, row: dict, message: str) -> None:
    good = {"tokens": ["Ann", "met", "Bob"], "tags": ["B-PER", "O", "B-PER"]}
    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    train.write_text(json.dumps(good) + "\n" + (json.dumps(row) + "\n" if "XYZ" not in str(row) else ""))
    dev.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(KDistillError, match=message) as err:
        load_task_data(DataConfig(task=None, train_file=str(train), validation_file=str(dev)))
    assert "\n" not in str(err.value)


def test_a_tag_outside_the_label_set_exits_2_via_the_cli(capsys, tmp_path: Path) -> None:
    train = _conll(tmp_path / "train.conll", [[("John", "B-PER"), ("runs", "O")]])
    dev = _conll(tmp_path / "dev.conll", [[("Oslo", "B-LOC")]])
    code = cli.main(["finetune", "--data.task", "null", "--data.train_file", str(train), "--data.validation_file",
                     str(dev), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(r"kdistill: error: tag 'B-LOC' in .*dev.conll line 1 is not in the label set \(O, B-PER, "
                     r"I-PER\)", err), err


def test_augment_is_refused_for_tags(tmp_path: Path) -> None:
    train = _conll(tmp_path / "train.conll", [[("John", "B-PER"), ("runs", "O")], [("Ann", "B-PER")]])
    cfg = build(AugmentConfig, {"data": {"task": None, "train_file": str(train), "validation_file": str(train)},
                                "mlm": str(tmp_path / "no-mlm"), "out": str(tmp_path / "aug.jsonl")})
    from kdistill.augment import augment_task

    with pytest.raises(KDistillError, match="tags would no longer line up: a token-classification task"):
        augment_task(cfg)


# ------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def bare_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = make_tiny_bert(tmp_path_factory.mktemp("enc") / "with-head")
    out = built.parent / "bare"
    load_classifier(str(built)).bert.save_pretrained(out)
    for f in built.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special")):
            shutil.copy(f, out / f.name)
    return out


def _own_predictions(model_dir: Path, conll: Path, max_length: int) -> tuple[list[list[str]], list[list[str]]]:
    """Tags per word computed here, independently of kdistill's scoring: first piece's argmax, cut words O."""
    tok, model = load_tokenizer(str(model_dir)), load_classifier(str(model_dir)).eval()
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    preds, golds = [], []
    for block in conll.read_text(encoding="utf-8").strip().split("\n\n"):
        words, tags = zip(*[(line.split()[0], line.split()[-1]) for line in block.splitlines()], strict=True)
        enc = tok(list(words), is_split_into_words=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            best = model(**enc).logits[0].argmax(-1).tolist()
        pred, seen = ["O"] * len(words), set()
        for pos, w in enumerate(enc.word_ids(0)):
            if w is not None and w not in seen:
                seen.add(w)
                pred[w] = names[best[pos]]
        preds.append(pred)
        golds.append(list(tags))
    return preds, golds


def test_ner_end_to_end(tmp_path: Path, bare_encoder: Path) -> None:
    from seqeval.metrics import f1_score

    train, test = _slice("train.txt", 64, tmp_path / "train.conll"), _slice("test.txt", 24, tmp_path / "test.conll")
    data = {"task": None, "train_file": str(train), "test_file": str(test), "max_length": 16, "label_names": TAGS}
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    api.finetune(FinetuneConfig(model=str(bare_encoder), data=DataConfig(**data), train=TrainConfig(**TRAIN),
                                out=str(teacher)))
    t_cfg = json.loads((teacher / "config.json").read_text())
    assert t_cfg["architectures"] == ["BertForTokenClassification"] and t_cfg["id2label"]["5"] == "B-LOC"
    assert task_of_config(load_classifier(str(teacher)).config) == "token_classification"
    losses = [LossConfig(name="kl", temperature=2.0), LossConfig(name="ce"), LossConfig(name="hidden_mse")]
    api.distill(DistillConfig(teacher=str(teacher), data=DataConfig(**data), train=TrainConfig(**TRAIN),
                              student=StudentConfig(num_layers=2, hidden_size=16), losses=losses, teacher_cache=True,
                              out=str(student)))
    s_cfg = json.loads((student / "config.json").read_text())
    assert (s_cfg["architectures"], s_cfg["num_hidden_layers"], s_cfg["hidden_size"]) == (
        ["BertForTokenClassification"], 2, 16)
    metrics = json.loads((student / "metrics.json").read_text())
    assert metrics["method"].startswith("1*kl[T=2] + 1*ce + 1*hidden_mse")
    assert set(metrics["test"]) == {"entity_f1", "entity_precision", "entity_recall", "token_accuracy"}

    # the cache holds, per training sentence, the live teacher's logits at each of its real pieces
    d = load_task_data(DataConfig(**data))
    t_tok, t_model = load_tokenizer(str(teacher)), load_classifier(str(teacher)).eval()
    cached = CachedTeacher(metrics["teacher_cache"]["folder"], FeatureRequest())
    assert cached.per_token
    rows = tokenize_splits(d, t_tok, 16)["train"]
    for i in range(0, len(rows), 7):
        with torch.no_grad():
            live = t_model(input_ids=torch.tensor([rows[i]["input_ids"]])).logits[0]
        assert cached.example_logits(i).shape == live.shape
        assert torch.allclose(cached.example_logits(i), live, atol=1e-5)

    # evaluate: seqeval F1 of tags computed here (cut words predicted O) against the file's gold tags
    result = api.evaluate(EvaluateConfig(model=str(student), teacher=str(teacher), data=DataConfig(**data),
                                         speed=False))
    preds, golds = _own_predictions(student, test, 16)
    assert any(len(g) > 12 for g in golds)  # some sentences are cut at 16 pieces
    assert result["model"]["metrics"]["entity_f1"] == pytest.approx(f1_score(golds, preds, zero_division=0))
    assert result["model"]["metrics"]["token_accuracy"] == pytest.approx(
        np.mean([p == g for ps, gs in zip(preds, golds, strict=True) for p, g in zip(ps, gs, strict=True)]))

    # export: ONNX Runtime's (B, L, C) logits match PyTorch's; int8 scored with the same metric
    exported = api.export(ExportConfig(model=str(student), quantize=True))
    assert exported["max_abs_diff"] <= 1e-4 and exported["metric"] == "entity_f1"
    assert exported["inputs"][:2] == ["input_ids", "attention_mask"]

    # report: the per-type F1 table, no confusion matrix
    report = api.report(ReportConfig(runs=[str(student)], out=str(tmp_path / "report"), speed=False))
    page = Path(report["html"]).read_text()
    assert page.count("Per-entity-type F1") == 2 and "confusion" not in page.lower()

    # the model card and the saved folder serve pipeline("token-classification")
    card = (student / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card and 'aggregation_strategy="simple"' in card
    from transformers import pipeline

    text = "Peter Blackburn visited Germany ."
    pipe = pipeline("token-classification", model=str(student), device="cpu", aggregation_strategy="none")
    enc = load_tokenizer(str(student))(text, return_tensors="pt")
    with torch.no_grad():
        best = load_classifier(str(student))(**enc).logits[0].argmax(-1).tolist()
    expected = [(i, TAGS[b]) for i, b in enumerate(best) if TAGS[b] != "O" and 0 < i < len(best) - 1]
    assert [(e["index"], e["entity"]) for e in pipe(text)] == expected
    tagged = tmp_path / "all-per"  # the same student made to tag every piece I-PER: one PER entity, the whole text
    model = load_classifier(str(student))
    with torch.no_grad():
        model.classifier.bias[TAGS.index("I-PER")] = 100.0
    model.save_pretrained(tagged)
    load_tokenizer(str(student)).save_pretrained(tagged)
    entities = pipeline("token-classification", model=str(tagged), device="cpu", aggregation_strategy="simple")(text)
    assert [(e["entity_group"], e["start"], e["end"]) for e in entities] == [("PER", 0, len(text))]

    # kdistill label, stored answers and one-output students are refused at set-up, naming the task type
    txt = tmp_path / "in.txt"
    txt.write_text("Peter visited Germany\n", encoding="utf-8")
    with pytest.raises(KDistillError, match="one answer per example; a token-classification task"):
        api.label(LabelConfig(teacher=str(teacher), input=str(txt), out=str(tmp_path / "l.jsonl"), device="cpu"))
    for kw, message in (({"teacher_answers": str(txt)}, "teacher_answers keep one answer per example"),
                        ({"student": StudentConfig(init="bilstm")}, "student.init bilstm builds a classifier")):
        with pytest.raises(KDistillError, match=message):
            api.distill(DistillConfig(teacher=str(teacher), data=DataConfig(**data), train=TrainConfig(**TRAIN),
                                      losses=[LossConfig(name="kl")], out=str(tmp_path / "refused"), **kw))
    loader = make_loader(tokenize_splits(d, t_tok, 16)["test"], t_tok, 4, task=d.task)
    assert next(iter(loader))["labels"].dim() == 2  # batches of token labels, padded with -100
