"""Question + context windows (`kdistill.tasks.qa_windows`) with a tiny WordPiece tokenizer whose tokens are known by
hand, and a tiny end-to-end QA distillation: windows -> losses -> post-processing -> SQuAD score."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from kdistill.errors import KDistillError
from kdistill.tasks.qa_data import QAExample
from kdistill.tasks.qa_losses import span_ce, span_kl
from kdistill.tasks.qa_metric import squad_scores
from kdistill.tasks.qa_postprocess import postprocess
from kdistill.tasks.qa_predict import answer, answer_questions
from kdistill.tasks.qa_windows import answer_tokens, make_windows

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "is", "who", "where", "?", ".", *WORDS, "##s"]
CONTEXT = "Alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"  # one token a word: t0 .. t11


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("qa-tok")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)


def example(answer: str, qid: str = "q", context: str = CONTEXT, question: str = "what is") -> QAExample:
    return QAExample(qid, question, context, (answer,), (context.index(answer),))


def test_answer_crossing_a_window_boundary(tokenizer) -> None:
    # "what is" = 2 tokens; max_length 10 leaves 5 context tokens a window, consecutive windows share 2:
    # context tokens [0-4], [3-7], [6-10], [9-11]; a window is [CLS] what is [SEP] <context> [SEP]
    ex = example("epsilon zeta")  # t4 t5: window 0 ends inside it, window 1 holds it whole
    w = make_windows([ex], tokenizer, max_length=10, doc_stride=2)
    assert len(w) == 4 and w.example_index == [0, 0, 0, 0] and w.example_ids == ["q"] * 4
    firsts = [next(o for o in offs if o is not None) for offs in w.offsets]
    assert [CONTEXT[a:b] for a, b in firsts] == ["Alpha", "delta", "eta", "kappa"]
    assert w.start_positions == [0, 5, 0, 0] and w.end_positions == [0, 6, 0, 0]  # CLS = 0 where it is cut or absent
    s, e = w.offsets[1][5], w.offsets[1][6]
    assert s is not None and e is not None and CONTEXT[s[0]:e[1]] == "epsilon zeta"
    assert tokenizer.convert_ids_to_tokens(w.input_ids[1][5:7]) == ["epsilon", "zeta"]
    # question and special tokens carry no offsets; the span mask is the context plus CLS
    assert w.offsets[1][:4] == [None] * 4 and w.offsets[1][-1] is None
    assert w.span_mask[1] == [1, 0, 0, 0, 1, 1, 1, 1, 1, 0]
    assert w.token_type_ids is not None and w.token_type_ids[1] == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]


def test_every_window_that_holds_the_answer_labels_it(tokenizer) -> None:
    # "delta" (t3) is in windows 0 and 1; "epsilon" (t4) is window 0's last context token, where HF's
    # prepare_train_features would scan on into [SEP]
    w = make_windows([example("delta", "d"), example("epsilon", "e")], tokenizer, max_length=10, doc_stride=2)
    assert w.example_ids == ["d"] * 4 + ["e"] * 4
    assert w.start_positions == [7, 4, 0, 0, 8, 5, 0, 0] and w.end_positions == w.start_positions


def test_padded_windows_and_multi_piece_answers(tokenizer) -> None:
    context = "Alpha gammas beta"
    ex = QAExample("p", "who", context, ("gammas",), (6,))
    w = make_windows([ex], tokenizer, max_length=12, doc_stride=2, pad_to_max_length=True)
    assert len(w) == 1 and len(w.input_ids[0]) == 12
    assert tokenizer.convert_ids_to_tokens(w.input_ids[0][:8]) == ["[CLS]", "who", "[SEP]", "alpha", "gamma", "##s",
                                                                   "beta", "[SEP]"]
    assert (w.start_positions, w.end_positions) == ([4], [5])
    assert w.attention_mask[0] == [1] * 8 + [0] * 4 and w.span_mask[0] == [1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert w.offsets[0][8:] == [None] * 4
    # the last window of a long context, padded: its answer in the last context token still labels that token
    w = make_windows([example("mu")], tokenizer, max_length=10, doc_stride=2, pad_to_max_length=True)
    assert [len(x) for x in w.input_ids] == [10] * 4 and w.start_positions[-1] == 6 and w.end_positions[-1] == 6
    assert w.attention_mask[-1] == [1] * 8 + [0] * 2


def test_answer_tokens_rule() -> None:
    offs = [None, None, (0, 5), (6, 11), (11, 12), (13, 18), None]
    assert answer_tokens(offs, 6, 12) == (3, 4)  # two pieces of one word
    assert answer_tokens(offs, 8, 10) == (3, 3)  # inside one token: that token
    assert answer_tokens(offs, 13, 18) == (5, 5)  # the last context token
    assert answer_tokens(offs, 13, 19) is None  # runs past the window's context
    assert answer_tokens([None, None], 0, 1) is None


def test_columns_make_a_dataset_and_eval_windows_have_no_labels(tokenizer) -> None:
    w = make_windows([example("zeta"), example("mu", "q2")], tokenizer, max_length=10, doc_stride=2, labels=False)
    assert w.start_positions is None and w.end_positions is None
    ds = datasets.Dataset.from_dict(w.columns())
    assert len(ds) == 8 and "start_positions" not in ds.column_names
    assert ds[1]["offset_mapping"][:5] == [None, None, None, None, list(w.offsets[1][4])]
    assert ds["example_id"] == ["q"] * 4 + ["q2"] * 4


def test_slow_tokenizer_and_too_long_question_are_one_line_errors(tokenizer, tmp_path: Path) -> None:
    from transformers import BertTokenizerLegacy

    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    slow = BertTokenizerLegacy(str(tmp_path / "vocab.txt"))
    with pytest.raises(KDistillError, match=r"^extractive QA needs a fast tokenizer .*BertTokenizerLegacy is a slow"):
        make_windows([example("zeta")], slow, max_length=10, doc_stride=2)
    long_q = example("zeta", "long", question="what is alpha beta gamma")  # 5 tokens: 10 - 3 - 5 = 2 context tokens
    with pytest.raises(KDistillError, match=r"^question 'long' has 5 tokens, which leaves 2 context tokens per "
                                            r"window with max_length 10, but each window must hold more than "
                                            r"doc_stride \(2\)"):
        make_windows([example("zeta"), long_q], tokenizer, max_length=10, doc_stride=2)
    assert len(make_windows([long_q], tokenizer, max_length=10, doc_stride=1)) == 11
    with pytest.raises(KDistillError, match="has no answers: a training example needs one"):
        make_windows([QAExample("none", "who", CONTEXT, (), ())], tokenizer, max_length=10, doc_stride=2)


def tiny_qa_model(tokenizer, seed: int, layers: int):
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    return BertForQuestionAnswering(cfg)


def batch(w) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v) for k, v in w.model_inputs().items()}


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread; two threads on a busy 2-core machine spin against each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fit(model, inputs: dict[str, torch.Tensor], loss_fn, steps: int = 60) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        out = model(**inputs)
        loss = loss_fn(out.start_logits, out.end_logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def test_tiny_distillation_run_answers_across_windows(tokenizer, one_thread, tmp_path: Path) -> None:
    """A teacher fitted to the gold spans; a student trained on its start/end distributions alone (no gold labels)
    gives the same answers, merged over windows that hold the answer and windows that do not (q1's and q3's
    answers are cut by a window boundary); SQuAD EM is 100 for both."""
    backwards = " ".join(reversed(CONTEXT.lower().split())).capitalize()  # "Mu lambda ... alpha"
    rotated = "Eta theta iota kappa lambda mu alpha beta gamma delta epsilon zeta"
    examples = [example("epsilon zeta", "q1"), example("theta", "q2", context=backwards, question="where"),
                example("beta gamma", "q3", context=rotated, question="who")]
    w = make_windows(examples, tokenizer, max_length=10, doc_stride=2, pad_to_max_length=True)
    inputs, mask = batch(w), torch.tensor(w.span_mask)
    starts, ends = torch.tensor(w.start_positions), torch.tensor(w.end_positions)
    for qid in ("q1", "q2", "q3"):  # each answer is in some of its question's windows and not in others
        labels = [int(starts[i]) for i in range(len(w)) if w.example_ids[i] == qid]
        assert 0 in labels and any(x > 0 for x in labels), (qid, labels)
    refs = {ex.id: list(ex.answers) for ex in examples}

    teacher = tiny_qa_model(tokenizer, seed=0, layers=2)
    fit(teacher, inputs, lambda s, e: span_ce(s, e, starts, ends))
    with torch.no_grad():
        t_out = teacher(**inputs)
    t_pred = postprocess(examples, w, t_out.start_logits.numpy(), t_out.end_logits.numpy())
    assert t_pred == {"q1": "epsilon zeta", "q2": "theta", "q3": "beta gamma"}
    assert squad_scores(t_pred, refs) == {"exact_match": 100.0, "f1": 100.0}

    student = tiny_qa_model(tokenizer, seed=1, layers=1)
    with torch.no_grad():
        before = postprocess(examples, w, *(x.numpy() for x in student(**inputs)[:2]))
    losses = fit(student, inputs, lambda s, e: span_kl(s, e, t_out.start_logits, t_out.end_logits, mask=mask,
                                                       temperature=2.0))
    with torch.no_grad():
        s_out = student(**inputs)
    s_pred = postprocess(examples, w, s_out.start_logits.numpy(), s_out.end_logits.numpy())
    assert before != t_pred and s_pred == t_pred
    assert losses[-1] < 0.1 * losses[0]
    assert np.isfinite(s_out.start_logits.numpy()).all()

    # the saved student answers from its folder (what pipeline("question-answering") did before transformers 5.2x)
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    student.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, tok = AutoModelForQuestionAnswering.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    assert answer_questions(model, tok, examples, max_length=10, doc_stride=2, batch_size=5) == t_pred
    one = answer(model, tok, "where", backwards, max_length=10, doc_stride=2)
    assert one.text == "theta" and backwards[one.start_char:one.end_char] == "theta"
    with pytest.raises(KDistillError, match="answer: the context is empty"):  # not a silent '' at score -inf
        answer(model, tok, "where", "  ")


def test_a_model_without_start_end_logits_is_refused(tokenizer) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    from kdistill.tasks.qa_predict import window_logits

    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)
    w = make_windows([example("zeta")], tokenizer, max_length=10, doc_stride=2, labels=False)
    with pytest.raises(KDistillError, match="^BertForSequenceClassification gives no start/end logits"):
        window_logits(BertForSequenceClassification(cfg), tokenizer, w)
