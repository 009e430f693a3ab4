"""AdaBERT: the search space, the search (architecture weights move, beta lowers the cost), the derived student."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from kdistill.config import DataConfig, build
from kdistill.data import load_task_data
from kdistill.export import export_onnx, onnx_logits, onnx_session
from kdistill.models import load_classifier, load_tokenizer
from kdistill.students.adabert import OPS, AdaBertConfig, AdaBertForSequenceClassification, derive_genotype, num_edges
from kdistill.students.search import SearchSettings, derived_student, run_search
from kdistill.tokenized import tokenize_splits


@pytest.fixture(scope="module")
def train(tiny_teacher: Path):
    data = load_task_data(build(DataConfig, {"task": "sst2", "max_train_examples": 64, "max_length": 24}))
    return tokenize_splits(data, load_tokenizer(str(tiny_teacher)), 24, None)["train"]


def _search(tiny_teacher: Path, train, beta: float, epochs: float = 2.0, warmup: float = 0.0):
    s = SearchSettings(num_cells=2, num_nodes=2, hidden_size=16, epochs=epochs, batch_size=16, arch_lr=0.05,
                       efficiency_weight=beta, arch_warmup=warmup, progress=False, seed=1)
    return run_search(load_classifier(str(tiny_teacher)), load_tokenizer(str(tiny_teacher)), train, s)


def test_the_search_moves_the_architecture_and_beta_lowers_its_cost(tiny_teacher: Path, train) -> None:
    cfg0, free = _search(tiny_teacher, train, beta=0.0)
    _, thrifty = _search(tiny_teacher, train, beta=20.0)
    start = torch.tensor(free["alpha"])
    assert start.shape == (num_edges(2), len(OPS)) and float(start.abs().max()) > 0.02  # moved from ~1e-3
    assert thrifty["expected_cost_end"] < thrifty["expected_cost_start"]
    assert thrifty["expected_cost_end"] < free["expected_cost_end"]
    assert len(cfg0.genotype) == 2 and all(len(node) == 2 for node in cfg0.genotype)
    assert all(op != "zero" for node in cfg0.genotype for op, _ in node)
    assert free["steps"] == 4 and len(free["history"]) == 4


def test_warm_up_steps_leave_the_architecture_alone(tiny_teacher: Path, train) -> None:
    _, none = _search(tiny_teacher, train, beta=1.0, epochs=4.0, warmup=0.0)
    _, half = _search(tiny_teacher, train, beta=1.0, epochs=4.0, warmup=0.5)
    assert none["steps"] == half["steps"] == 8
    assert [h["step"] for h in half["history"]] == [5, 6, 7, 8]  # architecture steps only after the warm-up
    assert len(none["history"]) == 8
    moved_none = (torch.tensor(none["alpha"]) - torch.tensor(half["alpha"])).abs().max()
    assert float(moved_none) > 0  # the warm-up changed the search


def test_derivation_keeps_each_nodes_two_strongest_edges() -> None:
    alpha = torch.full((num_edges(2), len(OPS)), -5.0)
    alpha[0, OPS.index("zero")] = 9.0  # edge 0 (node 0 <- input 0): zero wins, its best real op is weak
    alpha[0, OPS.index("conv3")] = 1.0
    alpha[1, OPS.index("maxpool3")] = 3.0  # node 0 <- input 1
    alpha[2, OPS.index("conv7")] = 4.0  # node 1 <- input 0
    alpha[3, OPS.index("identity")] = 2.0  # node 1 <- input 1
    alpha[4, OPS.index("dilconv5")] = 6.0  # node 1 <- node 0 (state 2)
    assert derive_genotype(alpha, 2) == [[("maxpool3", 1), ("conv3", 0)], [("dilconv5", 2), ("conv7", 0)]]


def test_the_derived_student_is_a_plain_model_that_ignores_padding_and_exports(tiny_teacher: Path,
                                                                                tmp_path: Path) -> None:
    genotype = [[["conv3", 0], ["avgpool3", 1]], [["maxpool3", 2], ["dilconv5", 0]]]
    teacher = load_classifier(str(tiny_teacher))
    cfg = AdaBertConfig(vocab_size=teacher.config.vocab_size, embedding_size=32, hidden_size=16, num_cells=2,
                        genotype=genotype, num_labels=2)
    model = derived_student(cfg, teacher).eval()
    assert torch.equal(model.embeddings.weight, teacher.get_input_embeddings().weight)
    ids = torch.tensor([[2, 40, 41, 42, 3, 0, 0], [2, 50, 51, 52, 53, 54, 3]])
    mask = (ids != 0).long()
    with torch.no_grad():
        both = model(input_ids=ids, attention_mask=mask).logits
        alone = model(input_ids=ids[:1, :5], attention_mask=mask[:1, :5]).logits
    torch.testing.assert_close(both[:1], alone, atol=1e-6, rtol=0)  # padding after a row changes nothing
    model.save_pretrained(tmp_path / "ada")
    load_tokenizer(str(tiny_teacher)).save_pretrained(tmp_path / "ada")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ada").eval()
    assert isinstance(again, AdaBertForSequenceClassification) and again.config.genotype == genotype
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids, attention_mask=mask).logits, both)
    path = export_onnx(str(tmp_path / "ada"), tmp_path / "onnx")
    got = onnx_logits(onnx_session(path), {"input_ids": ids, "attention_mask": mask})
    assert abs(got - both.numpy()).max() < 1e-4


def test_kdistill_search_writes_a_student_that_kdistill_distill_retrains(tiny_teacher: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    import json

    from kdistill.cli import main

    data = ["--data.task", "sst2", "--data.max_train_examples", "32", "--data.max_eval_examples", "16",
            "--data.max_length", "24"]
    assert main(["search", "--teacher", str(tiny_teacher), *data, "--cells", "1", "--nodes", "2",
                 "--hidden_size", "16", "--batch_size", "16", "--progress", "false", "--out", "ada"]) == 0
    out = capsys.readouterr().out
    assert "genotype (every cell; chosen by perturbation;" in out and "node 2:" in out
    assert "by alpha it would be: node 1:" in out
    genotype = json.loads((tmp_path / "ada" / "genotype.json").read_text())["genotype"]
    assert json.loads((tmp_path / "ada" / "config.json").read_text())["genotype"] == genotype
    assert main(["distill", "--teacher", str(tiny_teacher), "--student.init", "path", "--student.path", "ada",
                 *data, "--losses", "[{name: kl, temperature: 1.0}, {name: ce}]", "--epochs", "1",
                 "--batch_size", "16", "--progress", "false", "--out", "retrained"]) == 0
    assert json.loads((tmp_path / "retrained" / "config.json").read_text())["model_type"] == "kdistill-adabert"
    assert main(["search", "--teacher", str(tiny_teacher), *data, "--out", "ada", "--cells", "1",
                 "--progress", "false"]) == 0  # its own earlier output is a folder it may write again


class _KnownNet(torch.nn.Module):
    """logits = (4 w[0, conv3] + w[1, conv5], 0): the loss depends on two operations, with known sizes."""

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        first = 4 * w[0, OPS.index("conv3")] + w[1, OPS.index("conv5")]
        return torch.stack([first, torch.tensor(0.0)]).expand(ids.size(0), 2)


def test_perturbation_scores_are_the_rise_of_the_held_out_loss_when_one_operation_is_removed() -> None:
    from kdistill.students.adabert import genotype_from_scores
    from kdistill.students.selection import perturbation_scores

    alpha = torch.zeros(num_edges(1), len(OPS))
    alpha[0, OPS.index("identity")] = 3.0  # identity has edge 0's largest weight, but the output ignores it
    w = alpha.softmax(-1)
    labels = torch.zeros(4, dtype=torch.long)
    batches = [(torch.ones(4, 3, dtype=torch.long), torch.ones(4, 3), labels, torch.zeros(4, 2))]

    def ce(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits, y)

    def by_hand(first: float) -> float:  # CE of class 0 with logits (first, 0)
        return float(torch.nn.functional.softplus(torch.tensor(-first)))

    conv3, conv5 = OPS.index("conv3"), OPS.index("conv5")
    base = 4 * float(w[0, conv3]) + float(w[1, conv5])
    scores = perturbation_scores(_KnownNet(), alpha, batches, ce)
    assert scores.shape == alpha.shape
    assert float(scores[0, conv3]) == pytest.approx(by_hand(base - 4 * float(w[0, conv3])) - by_hand(base), abs=1e-6)
    assert float(scores[1, conv5]) == pytest.approx(by_hand(base - float(w[1, conv5])) - by_hand(base), abs=1e-6)
    others = scores.clone()
    others[0, conv3] = others[1, conv5] = 0.0
    assert float(others.abs().max()) == 0.0  # an operation the output ignores scores nothing
    assert float(scores[0, conv3]) > float(scores[1, conv5]) > 0  # 4 x 0.036 of the logit against 0.111
    assert derive_genotype(alpha, 1)[0][0] == ("identity", 0)  # the weights' rule keeps the ignored operation
    assert genotype_from_scores(scores, 1) == [[("conv3", 0), ("conv5", 1)]]


def test_the_search_reports_both_selections_and_keeps_the_chosen_one(tiny_teacher: Path, train) -> None:
    s = SearchSettings(num_cells=2, num_nodes=2, hidden_size=16, epochs=1.0, batch_size=16, progress=False,
                       seed=1, selection="alpha", selection_examples=20)
    cfg, summary = run_search(load_classifier(str(tiny_teacher)), load_tokenizer(str(tiny_teacher)), train, s)
    assert summary["selection"] == "alpha" and cfg.genotype == summary["genotype_alpha"]
    assert len(summary["genotype_perturbation"]) == 2 and len(summary["genotype_task_loss_perturbation"]) == 2
    assert summary["selection_examples_used"] == 20  # of the 32 rows in the architecture half
    scores = torch.tensor(summary["perturbation_scores"])
    assert scores.shape == (num_edges(2), len(OPS)) and float(scores.abs().max()) > 0
    assert float(scores[:, OPS.index("zero")].abs().max()) == 0.0
    assert cfg.genotype == [[list(e) for e in node] for node in derive_genotype(torch.tensor(summary["alpha"]), 2)]


def test_objective_scores_charge_each_operation_its_expected_cost_so_a_larger_beta_keeps_cheaper_ops() -> None:
    from kdistill.students.adabert import genotype_from_scores, op_params
    from kdistill.students.selection import objective_scores, op_costs

    costs = op_costs(16, num_edges(1))
    raw = torch.tensor([float(op_params(o, 16)) for o in OPS])
    torch.testing.assert_close(costs, raw / (raw.max() * num_edges(1)))
    assert float(costs[OPS.index("conv7")]) == pytest.approx(1 / num_edges(1))  # the largest op on every edge = 1
    assert float(costs[OPS.index("maxpool3")]) == 0.0
    alpha = torch.randn(num_edges(1), len(OPS))
    scores = torch.zeros(num_edges(1), len(OPS))
    scores[:, OPS.index("conv3")] = 0.01  # the task loss needs conv3 a little on both edges
    scores[:, OPS.index("maxpool3")] = 0.005
    w = alpha.softmax(-1)
    got = objective_scores(scores, alpha, costs, 2.0)
    torch.testing.assert_close(got, scores - 2.0 * w * costs)
    assert genotype_from_scores(objective_scores(scores, alpha, costs, 0.0), 1) == [[("conv3", 0), ("conv3", 1)]]
    heavy = genotype_from_scores(objective_scores(scores, alpha, costs, 100.0), 1)
    assert {op for op, _ in heavy[0]} == {"maxpool3"}  # beta large: the parameter-free op that the loss still needs
