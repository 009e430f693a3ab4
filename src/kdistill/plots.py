"""The report's figures as PNG bytes: confusion matrices, predicted vs gold scores, training curves, metric vs
parameters.

Every function returns the encoded PNG instead of a file so the report can both embed it in a
self-contained HTML page and write it next to the markdown. matplotlib runs on the Agg backend:
no display is needed, which is the case on servers and in CI.
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

Scalars = dict[str, list[tuple[int, float]]]
"""Tag -> (step, value) points in step order."""


def _png(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def confusion_png(matrix: np.ndarray, class_names: Sequence[str], title: str) -> bytes:
    """Heatmap of gold (rows) vs predicted (columns) counts, each cell labelled with its count."""
    n = len(class_names)
    side = max(2.8, 0.9 * n + 1.6)
    fig, ax = plt.subplots(figsize=(side + 0.6, side))
    im = ax.imshow(matrix, cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    peak = matrix.max() if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=10,
                    color="white" if peak and matrix[i, j] > peak / 2 else "black")
    names = [str(c) for c in class_names]
    ax.set_xticks(range(n), names, rotation=30 if n > 3 else 0, ha="right" if n > 3 else "center")
    ax.set_yticks(range(n), names)
    ax.set(xlabel="predicted", ylabel="gold", title=title)
    ax.title.set_fontsize(10)
    return _png(fig)


def scatter_png(gold: Sequence[float], predicted: Sequence[float], title: str) -> bytes:
    """Regression: one point per example, gold score (x) vs the model's (y), with the y = x line a perfect model
    lies on; drawn translucent so that thousands of overlapping pairs still show where they concentrate."""
    g, p = np.asarray(gold, dtype=float), np.asarray(predicted, dtype=float)
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    ax.scatter(g, p, s=8, alpha=0.35, color="C0", edgecolors="none")
    both = np.concatenate([g, p]) if len(g) else np.zeros(1)
    lo, hi = float(both.min()), float(both.max())
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="black", linestyle="--", linewidth=0.8)
    ax.set(xlim=(lo - pad, hi + pad), ylim=(lo - pad, hi + pad), xlabel="gold score", ylabel="predicted score",
           title=title)
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    return _png(fig)


# ------------------------------------------------------------------------------------ curves


def read_scalars(logdir: Path) -> Scalars:
    """Every scalar tag in a run's TensorBoard logs (all event files; a resumed step keeps its last value)."""
    if not logdir.is_dir() or not any(logdir.glob("events.out.tfevents.*")):
        return {}
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return {}
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    out: Scalars = {}
    for tag in acc.Tags().get("scalars", []):
        by_step = {int(e.step): float(e.value) for e in acc.Scalars(tag)}
        out[tag] = sorted(by_step.items())
    return out


def history_scalars(history: Sequence[Mapping[str, Any]]) -> Scalars:
    """Curves from metrics.json's per-epoch history, for runs without event files."""
    out: Scalars = defaultdict(list)
    for rec in history:
        step = int(rec.get("step", rec.get("epoch", 0)))
        for k, v in (rec.get("validation") or {}).items():
            out[f"validation/{k}"].append((step, float(v)))
        for term, layers in (rec.get("layer_losses") or {}).items():
            if layers:
                out[f"train/{term} (epoch mean)"].append((step, float(np.mean(list(layers.values())))))
    return dict(out)


def run_scalars(run_dir: Path, history: Sequence[Mapping[str, Any]]) -> tuple[Scalars, str]:
    """A run's curves, from its TensorBoard logs or else its metrics.json history, and a line saying which."""
    scalars = read_scalars(run_dir / "logs")
    if scalars:
        return scalars, f"From the TensorBoard logs in {run_dir / 'logs'}: {len(scalars)} scalar tags."
    scalars = history_scalars(history)
    if scalars:
        return scalars, "No TensorBoard logs; these points are the per-epoch history in metrics.json."
    return {}, "No TensorBoard logs and no per-epoch history to plot."


def _plot_lines(ax: Any, scalars: Scalars, tags: list[str], prefix: str) -> None:
    for tag in tags:
        steps, values = zip(*scalars[tag], strict=True)
        ax.plot(steps, values, marker="o" if len(steps) < 4 else None, markersize=4, linewidth=1.3,
                label=tag.removeprefix(prefix))
    ax.grid(alpha=0.3)
    ax.set_xlabel("optimizer step")


_LEGEND_COLUMNS = 2


def curves_png(scalars: Scalars, title: str) -> bytes | None:
    """One subplot each for loss terms, learning rate and validation metrics; None without any points."""
    fig = curves_figure(scalars, title)
    return _png(fig) if fig is not None else None


def curves_figure(scalars: Scalars, title: str) -> Figure | None:
    """The figure `curves_png` encodes; None without any points.

    Each panel's legend sits in its own row of the figure below the panel: a legend inside the axes covered
    the loss curves it names (six loss terms fill a small panel). The learning-rate panel has one line and
    no legend.
    """
    scalars = {k: v for k, v in scalars.items() if v}
    losses = sorted(k for k in scalars if k.startswith("train/") and k != "train/lr")
    lr = [k for k in scalars if k == "train/lr"]
    valid = sorted(k for k in scalars if k.startswith("validation/"))
    stage = [k for k in scalars if k.startswith("schedule/") and len({v for _, v in scalars[k]}) > 1]
    panels = [(t, name) for t, name in ((losses, "loss terms"), (lr, "learning rate"),
                                        (valid, "validation"), (stage, "layer schedule stage")) if t]
    if not panels:
        return None
    legend_rows = max(-(-len(tags) // _LEGEND_COLUMNS) for tags, name in panels if name != "learning rate") \
        if any(name != "learning rate" for _, name in panels) else 0
    legend_height = 0.2 * legend_rows + 0.1  # inches: one 8-pt line per row, and a margin
    fig = plt.figure(figsize=(4.3 * len(panels), 3.3 + legend_height))
    grid = fig.add_gridspec(2, len(panels), height_ratios=[3.3, legend_height])
    for i, (tags, name) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        prefix = tags[0].split("/", 1)[0] + "/"
        _plot_lines(ax, scalars, tags, prefix)
        ax.set_title(name, fontsize=10)
        if name == "loss terms" and all(v > 0 for t in tags for _, v in scalars[t]):
            lo = min(v for t in tags for _, v in scalars[t])
            hi = max(v for t in tags for _, v in scalars[t])
            if hi / lo > 30:
                ax.set_yscale("log")
        key = fig.add_subplot(grid[1, i])
        key.axis("off")
        if name == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        else:
            key.legend(*ax.get_legend_handles_labels(), loc="upper center", fontsize=8, frameon=False,
                       ncol=min(_LEGEND_COLUMNS, len(tags)), borderaxespad=0.0)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- metric vs params


def metric_vs_params_png(points: Sequence[Mapping[str, Any]]) -> bytes:
    """One point per model, a line per method, one subplot per task (as in benchmarks/internal_kd.png).

    Each point: task, metric, method, name, params, score, teacher (bool). Teachers are black stars
    with a dashed line at their score, so the gap each student leaves is visible.
    """
    tasks = list(dict.fromkeys(str(p["task"]) for p in points))
    methods = list(dict.fromkeys(str(p["method"]) for p in points if not p["teacher"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.6 * len(tasks), 4.0), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        mine = [p for p in points if str(p["task"]) == task]
        for i, method in enumerate(methods):
            pts = sorted((p["params"] / 1e6, 100 * p["score"], p["name"]) for p in mine
                         if p["method"] == method and not p["teacher"])
            if pts:
                xs, ys, _ = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", linewidth=1.5, color=f"C{i % 10}", label=method)
        placed: Counter[tuple[float, float]] = Counter()  # models on the same spot get stacked labels
        for p in mine:
            x, y = p["params"] / 1e6, 100 * p["score"]
            if p["teacher"]:
                ax.plot([x], [y], marker="*", markersize=14, color="black", linestyle="none", label="teacher")
                ax.axhline(y, color="black", linestyle="--", linewidth=0.8, alpha=0.6)
            spot = (round(x, 4), round(y, 2))
            ax.annotate(str(p["name"]), (x, y), textcoords="offset points", xytext=(6, 5 - 11 * placed[spot]),
                        fontsize=8)
            placed[spot] += 1
        sizes = [p["params"] for p in mine if p["params"] > 0]
        if sizes and max(sizes) / min(sizes) > 20:
            ax.set_xscale("log")
        ax.margins(x=0.15, y=0.2)
        ax.grid(alpha=0.3)
        metric = str(mine[0]["metric"])
        ax.set(title=f"{task}: {metric} vs size", xlabel="parameters (M)", ylabel=f"{metric} x 100")
        handles = dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
        ax.legend(handles.values(), handles.keys(), fontsize=8, loc="best")
    fig.tight_layout()
    return _png(fig)

