"""`kdistill report`: one HTML page (and markdown) with tables and embedded plots, rendered by a real browser."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from kdistill import api, cli
from kdistill.config import DistillConfig, FinetuneConfig, ReportConfig, build

DATA = {"task": "sst2", "max_train_examples": 96, "max_eval_examples": 48, "max_length": 32}
TRAIN = {"epochs": 1, "batch_size": 16, "eval_batch_size": 32, "lr": 1e-3, "progress": False, "save_steps": 1000,
         "device": "cpu", "log_every": 1, "threads": 1}
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny models on a shared, busy CPU: one torch thread is ~100x faster than two that wait on each other."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_teacher: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report")
    teacher = root / "teacher"
    api.finetune(build(FinetuneConfig, {"model": str(tiny_teacher), "out": str(teacher), "data": DATA,
                                        "train": {**TRAIN, "lr": 2e-3}}))
    out = {"teacher": teacher}
    for name, losses in (("kd", [{"name": "kl", "temperature": 2.0}, {"name": "ce"}]),
                         ("tinybert", [{"name": "kl"}, {"name": "hidden_mse"}, {"name": "attn_mse"}])):
        out[name] = root / name
        api.distill(build(DistillConfig, {"teacher": str(teacher), "student": {"num_layers": 2}, "data": DATA,
                                          "train": TRAIN, "losses": losses, "out": str(out[name])}))
    return out


@pytest.fixture(scope="module")
def report(runs: dict[str, Path]) -> dict[str, Any]:
    cfg = ReportConfig(runs=[str(runs["kd"]), str(runs["tinybert"])], out=str(runs["kd"].parent / "page"),
                       batch_sizes=[1, 4], seq_length=16, warmup=0, repeats=2, device="cpu", threads=1)
    return api.report(cfg)


def _pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b64) for b64 in IMG.findall(page)]


def test_html_embeds_retention_confusion_matrices_and_curves(report: dict[str, Any]) -> None:
    page = Path(report["html"]).read_text(encoding="utf-8")
    pngs = _pngs(page)
    # metric-vs-params + per run: teacher and student confusion matrices + training curves
    assert len(pngs) == 1 + 2 * 3 == page.count("<img ")
    assert all(p.startswith(PNG_MAGIC) and len(p) > 2000 for p in pngs)
    assert page.count("confusion</figcaption>") == 4 and page.count("training curves</figcaption>") == 2
    students = {m["name"]: m for m in report["models"] if not m["teacher"]}
    assert set(students) == {"kd", "tinybert"}
    for m in students.values():
        assert 0 < m["retention"] < 3
        assert f"{100 * m['retention']:.1f}%" in page  # the retention column
        assert sum(map(sum, m["confusion"])) == 48  # every test example lands in one cell
    assert "Latency and throughput" in page and "kl+hidden_mse+attn_mse" in page
    assert "<script" not in page.split("</head>")[0]  # the only script is the render check at the end


def test_curves_come_from_tensorboard_with_every_loss_term(report: dict[str, Any], runs: dict[str, Path]) -> None:
    from kdistill.plots import read_scalars

    tags = read_scalars(runs["tinybert"] / "logs")
    assert {"train/kl", "train/hidden_mse", "train/attn_mse", "train/loss", "train/lr", "validation/accuracy"} <= set(
        tags)
    assert len(tags["train/kl"]) == 6  # 96 examples / batch 16, logged every step
    page = Path(report["html"]).read_text(encoding="utf-8")
    assert f"From the TensorBoard logs in {runs['tinybert'] / 'logs'}: {len(tags)} scalar tags." in page


def test_markdown_has_the_same_content_and_links_files_that_exist(report: dict[str, Any]) -> None:
    md_path = Path(report["markdown"])
    md = md_path.read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 7 and all((md_path.parent / link).is_file() for link in links)
    assert all((md_path.parent / link).read_bytes().startswith(PNG_MAGIC) for link in links)
    assert not any("/" in link for link in links)  # relative, next to report.md
    page = Path(report["html"]).read_text(encoding="utf-8")
    assert re.findall(r"^#+ (.*)$", md, re.M) == [h for h in re.findall(r"<h[123]>(.*?)</h[123]>", page)]
    assert report["table"] in md


def test_returned_table_has_the_teacher_and_both_runs(report: dict[str, Any]) -> None:
    lines = report["table"].splitlines()
    assert lines[0].startswith("| Model | Method |") and "Latency bs=1 (ms)" in lines[0]
    assert "Throughput bs=4 (ex/s)" in lines[0]
    rows = {ln.split(" | ")[0].strip("| "): ln for ln in lines[2:]}
    assert set(rows) == {"teacher", "kd", "tinybert"}
    assert "| kl+ce |" in rows["kd"] and "| 100.0% |" in rows["teacher"]


def test_missing_teacher_history_fallback_and_escaping(runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run <b>&"
    shutil.copytree(runs["kd"], run)
    shutil.rmtree(run / "logs")
    cfg = yaml.safe_load((run / "kdistill.yaml").read_text())
    cfg["teacher"] = str(tmp_path / "gone")
    (run / "kdistill.yaml").write_text(yaml.safe_dump(cfg))
    res = api.report(ReportConfig(runs=[str(run)], out=str(tmp_path / "out"), speed=False, split="validation"))
    page = Path(res["html"]).read_text(encoding="utf-8")
    assert "teacher and retention are left out" in page and "Retention" not in page.split("Run: ")[1]
    assert "per-epoch history in metrics.json" in page
    assert "run &lt;b&gt;&amp;" in page and "run <b>" not in page
    assert len(_pngs(page)) == 3  # metric-vs-params, the student's confusion matrix, curves from history
    assert "Latency and throughput" not in page and "| teacher |" not in res["table"]
    assert "Retention" not in res["table"] and "| run <b>& | kl+ce |" in res["table"]


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("KDISTILL_REQUIRE_CHROMIUM") == "1":
        pytest.fail("KDISTILL_REQUIRE_CHROMIUM=1 but neither chromium nor chromium-browser is on PATH")
    return found


def test_page_renders_with_its_images_in_headless_chromium(report: dict[str, Any], tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed (set KDISTILL_REQUIRE_CHROMIUM=1 to make this a failure)")
    html_path = Path(report["html"]).resolve()
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                           "--dump-dom", html_path.as_uri()], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", proc.stdout)
    assert body, proc.stdout[:500]
    total = re.search(r'data-images="(\d+)"', body.group(1))
    rendered = re.search(r'data-images-rendered="(\d+)"', body.group(1))
    assert total and rendered, f"the load handler did not run: {body.group(0)}"
    assert int(total.group(1)) == 7 and int(rendered.group(1)) == int(total.group(1))


def test_cli_missing_run_is_one_line_and_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "nope", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "kdistill: error: run folder not found: nope"
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "has no metrics.json" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_training_time_is_human_readable(report: dict[str, Any], runs: dict[str, Path]) -> None:
    from kdistill.report import duration

    assert [duration(s) for s in (0.25, 1.68, 42.3, 1680.0, 1679.6, 7500.0)] == [
        "0.25 s", "1.7 s", "42 s", "28 min 0 s", "28 min 0 s", "2 h 5 min"]
    page = Path(report["html"]).read_text(encoding="utf-8")
    wall = yaml.safe_load((runs["kd"] / "metrics.json").read_text())["wall_seconds"]
    assert f"<th>training time</th><td>{duration(wall)}</td>" in page
    assert not re.search(r"training time</th><td>[\d.]+e[+-]", page)


def test_curves_legends_sit_outside_every_panel() -> None:
    from kdistill.plots import curves_figure

    terms = ["kl", "ce", "hidden_mse", "attn_mse", "cls_cosine", "loss"]
    scalars = {f"train/{t}": [(s, (i + 1) / (s + 1)) for s in range(20)] for i, t in enumerate(terms)}
    scalars["train/lr"] = [(s, 1e-4 * (1 - s / 20)) for s in range(20)]
    scalars["validation/accuracy"] = [(10, 0.7), (20, 0.8)]
    fig = curves_figure(scalars, "run: kl+ce+hidden_mse+attn_mse")
    assert fig is not None
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    panels = [ax for ax in fig.axes if ax.lines]
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(panels) == 3 and len(legends) == 2  # loss terms and validation; the single lr line needs none
    assert sorted(t.get_text() for t in legends[0].get_texts()) == sorted(terms)
    page = fig.bbox
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1
        for ax in panels:  # neither the curves nor the tick labels and axis label of any panel are covered
            assert not box.overlaps(ax.get_tightbbox(renderer)), (legend, ax.get_title())


def test_report_shows_the_speed_figures_of_the_runs_own_table(runs: dict[str, Path], tmp_path: Path) -> None:
    from kdistill.config import EvaluateConfig

    run = tmp_path / "kd"
    shutil.copytree(runs["kd"], run)
    speed = {"batch_sizes": [1, 4], "seq_length": 16, "device": "cpu", "threads": 1}
    result = api.evaluate(EvaluateConfig(model=str(run), teacher=str(runs["teacher"]), data=DATA, warmup=0,
                                         repeats=3, **speed))
    assert result["speed_settings"]["interleaved"] and result["speed_settings"]["models"] == 2
    assert [s["rounds"] for s in result["model"]["speedup"]] == [3, 3]  # teacher and student in the same rounds
    assert all("only 3 timed rounds" in s["unreliable"] for s in result["model"]["speedup"])
    assert len(result["speed_warnings"]) == 2 and (run / "evaluation.json").is_file()
    # the report of that run shows the very table `kdistill evaluate` / `kdistill run` printed
    res = api.report(ReportConfig(runs=[str(run)], out=str(tmp_path / "page"), **speed))
    md = Path(res["markdown"]).read_text(encoding="utf-8")
    evaluated = result["table"].split("\n\n")[0]
    head, _, *body = evaluated.splitlines()
    body = [ln.replace("| student |", "| kd |") for ln in body]  # the report names models by folder
    assert head in md
    assert all(ln in md for ln in body), (body, md)
    assert result["table"].split("\n\n")[1].splitlines()[1] in md  # the same "unreliable" footnote
    models = {m["name"]: m for m in res["models"]}
    assert models["kd"]["speed"] == result["model"]["speed"]
    assert models["teacher"]["speed"] == result["teacher"]["speed"]
    assert res["speed_note"].startswith("Not re-measured")
    # other shapes than the record's: everything on the page is timed again, together, and the page says so
    res = api.report(ReportConfig(runs=[str(run)], out=str(tmp_path / "page2"), **{**speed, "batch_sizes": [2]}))
    assert res["speed_note"].startswith("Measured now: all 2 models timed in the same window")
    assert "kd measured other weights, shapes or a different device" in res["speed_note"]
    assert [s["batch_size"] for s in {m["name"]: m for m in res["models"]}["kd"]["speedup"]] == [2]


@pytest.mark.parametrize(("metrics", "message"), [("[]", "holds a JSON list, not an object"),
                                                  ('{"history": "x", "test": 5}', "'test' is not an object of numbers"),
                                                  ('{"history": [1, 2]}', "'history' is not a list of objects")])
def test_a_metrics_file_of_the_wrong_shape_is_one_line(tmp_path: Path, metrics: str, message: str,
                                                       capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(metrics)
    (run / "kdistill.yaml").write_text("{}\n")
    assert cli.main(["report", str(run), "--out", str(tmp_path / "rep"), "--speed", "false"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and "\n" not in err, err


def test_a_warning_block_says_warning_once_in_both_formats() -> None:
    from kdistill.page import to_html, to_markdown

    blocks = [("warning", "validation predictions are a single class <0>")]
    assert to_markdown(blocks, {}).strip() == "> **Warning:** validation predictions are a single class <0>"
    page = to_html("t", blocks, {})
    assert "<strong>Warning:</strong> validation predictions are a single class &lt;0&gt;" in page
    assert page.count("Warning") == 1
