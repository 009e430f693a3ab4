"""BiLSTM and CNN students: built with the teacher's embeddings, trained from its logits, saved and evaluated
like any student."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdistill import api
from kdistill.config import DistillConfig, EvaluateConfig, build
from kdistill.errors import KDistillError
from kdistill.models import load_classifier


@pytest.mark.parametrize("kind", ["bilstm", "cnn"])
def test_simple_student_distills_saves_loads_and_is_evaluated(kind: str, tiny_teacher: Path, tmp_path: Path,
                                                               tiny_data: dict, fast_train: dict) -> None:
    cfg = build(DistillConfig, {"teacher": str(tiny_teacher), "student": {"init": kind, "hidden_size": 32},
                                "data": tiny_data, "train": {**fast_train, "epochs": 2},
                                "losses": [{"name": "logit_mse", "weight": 1.0}, {"name": "ce", "weight": 0.2}],
                                "out": str(tmp_path / kind)})
    summary = api.distill(cfg)
    student = load_classifier(str(tmp_path / kind))
    teacher = load_classifier(str(tiny_teacher))
    assert student.config.kind == kind and student.config.model_type == "kdistill-simple"
    assert summary["steps"] > 0 and summary["params"] == sum(p.numel() for p in student.parameters())
    # the student started from the teacher's word embeddings and trained them
    assert student.embeddings.weight.shape == teacher.get_input_embeddings().weight.shape
    report = api.evaluate(EvaluateConfig(model=str(tmp_path / kind), teacher=str(tiny_teacher),
                                         data=tiny_data, repeats=2, warmup=0, device="cpu"))
    assert report["model"]["speed"][0]["p50_ms"] > 0 and report["retention"] is not None
    assert "## Speed" in (tmp_path / kind / "README.md").read_text()


def test_simple_student_refuses_feature_losses(tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                               fast_train: dict) -> None:
    cfg = build(DistillConfig, {"teacher": str(tiny_teacher), "student": {"init": "cnn"}, "data": tiny_data,
                                "train": fast_train, "losses": [{"name": "kl"}, {"name": "hidden_mse"}],
                                "out": str(tmp_path / "x")})
    with pytest.raises(KDistillError, match="response losses"):
        api.distill(cfg)


def test_padding_does_not_change_the_prediction(tiny_teacher: Path) -> None:
    from kdistill.students.rnn import simple_student

    for kind in ("bilstm", "cnn"):
        model = simple_student(kind, load_classifier(str(tiny_teacher)), hidden_size=16).eval()
        ids = torch.tensor([[2, 50, 60, 70, 3]])
        padded = torch.tensor([[2, 50, 60, 70, 3, 0, 0]])
        mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
        with torch.no_grad():
            a = model(input_ids=ids).logits
            b = model(input_ids=padded, attention_mask=mask).logits
            other = model(input_ids=torch.tensor([[2, 50, 61, 70, 3]])).logits
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)  # padding changes nothing
        assert not torch.allclose(a, other, atol=1e-6)  # a real token does


def _vector_file(path: Path, words: dict[str, list[float]]) -> Path:
    path.write_text("".join(f"{w} {' '.join(str(x) for x in v)}\n" for w, v in words.items()), encoding="utf-8")
    return path


def test_vector_embeddings_match_words_pieces_and_lower_case(tmp_path: Path) -> None:
    from kdistill.students.rnn import vector_embeddings

    vecs = {"the": [1.0, 2.0, 3.0], "ing": [0.5, -0.5, 0.25], "film": [-1.0, 0.0, 1.0], "[pad]": [9.0, 9.0, 9.0]}
    spec = str(_vector_file(tmp_path / "v.txt", vecs))
    vocab = {"[PAD]": 0, "[UNK]": 1, "the": 2, "##ing": 3, "Film": 4, "zzz": 5, "##": 6}
    torch.manual_seed(0)
    weight, info = vector_embeddings(vocab, 8, spec, pad_token_id=0)
    assert weight.shape == (8, 3)
    assert info == {"from": "vectors", "vectors": spec, "dim": 3, "found": 3, "vocab": 8}
    torch.testing.assert_close(weight[2], torch.tensor(vecs["the"]))
    torch.testing.assert_close(weight[3], torch.tensor(vecs["ing"]))  # "##ing" -> "ing"
    torch.testing.assert_close(weight[4], torch.tensor(vecs["film"]))  # "Film" -> lower-case "film"
    assert torch.equal(weight[0], torch.zeros(3))  # padding row
    for row in (1, 5, 6, 7):  # no vector (row 7: beyond the tokenizer's entries): small random values
        assert 0 < weight[row].abs().max() < 10
    with pytest.raises(KDistillError, match="word vectors not found"):
        vector_embeddings(vocab, 8, str(tmp_path / "missing.txt"))


@pytest.mark.parametrize("kind", ["bilstm", "cnn"])
def test_simple_student_with_word_vectors_distills_saves_loads(kind: str, tiny_teacher: Path, tmp_path: Path,
                                                              tiny_data: dict, fast_train: dict) -> None:
    from kdistill.models import load_tokenizer

    vocab = load_tokenizer(str(tiny_teacher)).get_vocab()
    words = ["the", "a", "film", "movie", "good", "bad", "s", "not"]
    assert all(w in vocab for w in words)
    gen = torch.Generator().manual_seed(1)
    vecs = {w: [round(x, 4) for x in torch.randn(6, generator=gen).tolist()] for w in words}
    spec = str(_vector_file(tmp_path / "vectors.txt", vecs))
    # "s" also answers for the continuation piece "##s"
    expected = {i: vecs[t.removeprefix("##")] for t, i in vocab.items() if t.removeprefix("##") in vecs}
    cfg = build(DistillConfig, {"teacher": str(tiny_teacher),
                                "student": {"init": kind, "hidden_size": 16, "embeddings": spec},
                                "data": tiny_data, "train": {**fast_train, "epochs": 1, "lr": 1e-9},
                                "losses": [{"name": "logit_mse"}], "out": str(tmp_path / kind)})
    summary = api.distill(cfg)
    assert summary["steps"] > 0 and summary["test"]["accuracy"] >= 0
    student = load_classifier(str(tmp_path / kind))
    assert student.config.kind == kind and student.config.embedding_size == 6
    assert student.embeddings.weight.shape == (len(vocab), 6)  # the vectors' width, the teacher's rows
    init = student.config.kdistill_init
    assert init["from"] == "vectors" and init["found"] == len(expected) and init["vocab"] == len(vocab)
    for i, v in expected.items():  # lr 1e-9: the trained rows are still the vectors
        torch.testing.assert_close(student.embeddings.weight[i], torch.tensor(v), atol=1e-5, rtol=0)
    assert torch.equal(student.embeddings.weight[0], torch.zeros(6))


def test_word_vectors_are_refused_for_a_transformer_student(tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                                            fast_train: dict) -> None:
    from kdistill.config import StudentConfig
    from kdistill.students.build import build_student

    cfg = build(DistillConfig, {"teacher": str(tiny_teacher), "student": {"init": "teacher_layers", "num_layers": 2,
                                                                          "embeddings": "glove-6b-50d"},
                                "data": tiny_data, "train": fast_train, "out": str(tmp_path / "x")})
    with pytest.raises(KDistillError, match="student.embeddings"):
        api.distill(cfg)
    with pytest.raises(KDistillError, match="needs the teacher's tokenizer"):
        build_student(StudentConfig(init="bilstm", embeddings="glove-6b-50d"), load_classifier(str(tiny_teacher)),
                      single_sentence=True)


def test_bilstm_matches_packed_sequences(tiny_teacher: Path) -> None:
    """The export-friendly BiLSTM gives the same outputs as torch's packed sequences, in training too."""
    from kdistill.students.rnn import _bilstm

    lstm = torch.nn.LSTM(8, 5, batch_first=True, bidirectional=True)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] + [0] * 6])
    x = torch.randn(3, 7, 8) * mask.unsqueeze(-1)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, mask.sum(1), batch_first=True, enforce_sorted=False)
    ref, _ = torch.nn.utils.rnn.pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=7)
    got = _bilstm(lstm, x, mask) * mask.unsqueeze(-1)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    got.sum().backward()
    assert lstm.weight_hh_l0_reverse.grad is not None and lstm.weight_hh_l0_reverse.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["bilstm", "cnn"])
def test_simple_student_exports_to_onnx(kind: str, tiny_teacher: Path, tmp_path: Path) -> None:
    """`kdistill export` of a BiLSTM/CNN student: parity with PyTorch on padded batches of new shapes."""
    from kdistill import export as ex
    from kdistill.config import DataConfig, ExportConfig
    from kdistill.models import load_tokenizer
    from kdistill.students.rnn import simple_student

    torch.manual_seed(0)
    model = simple_student(kind, load_classifier(str(tiny_teacher)), hidden_size=16)
    with torch.no_grad():  # larger logits, so a graph that read the padding would show it
        model.classifier[-1].weight.mul_(30)
    run = tmp_path / kind
    model.save_pretrained(run)
    tok = load_tokenizer(str(tiny_teacher))
    tok.save_pretrained(run)
    data = DataConfig(task="sst2", max_eval_examples=24, max_length=32, cache_dir=str(tmp_path / "cache"))
    result = ex.export_model(ExportConfig(model=str(run), check_examples=12, data=data))
    assert result["inputs"] == ["input_ids", "attention_mask"] and result["max_abs_diff"] <= 1e-4
    session = ex.onnx_session(run / "onnx" / "model.onnx", threads=1)
    model = load_classifier(str(run)).eval()
    texts = ["this is a much longer sentence than any of the others , truly", "ok", "a fine film", "bad"]
    for batch_texts in (texts, texts[1:3], texts[:1]):  # 4 x n, 2 x m and batch 1: not the export's 3 x 11
        batch = dict(tok(batch_texts, padding=True, return_tensors="pt"))
        batch.pop("token_type_ids", None)
        with torch.inference_mode():
            ref = model(**batch).logits.numpy()
            unmasked = model(**{**batch, "attention_mask": torch.ones_like(batch["input_ids"])}).logits.numpy()
        if len(batch_texts) > 1:
            assert abs(unmasked - ref).max() > 1e-3  # padding would change the answer if it were read
        assert abs(ex.onnx_logits(session, batch) - ref).max() <= 1e-4
