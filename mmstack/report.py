"""metrics.json, PNG plots and an offline report.html for one run."""
from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dataclasses import dataclass, field  # noqa: E402

from .metrics import FOR_PROBLEM, METRICS, to_labels  # noqa: E402
from .models.base import ModelResult  # noqa: E402
from .stack.stacking import Stacked  # noqa: E402
from .store import atomic_path, write_json, write_text  # noqa: E402
from .targets import Target  # noqa: E402

log = logging.getLogger(__name__)


@dataclass
class TargetReport:
    """What the report shows for one target: its labels, level-1 results, stack, ablation and residual groups
    (column name -> value per labelled row)."""

    target: Target
    y: np.ndarray
    results: list[ModelResult]
    stacked: Stacked
    ablation: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, np.ndarray] = field(default_factory=dict)


def target_metrics(r: TargetReport) -> dict[str, Any]:
    """One target's section of metrics.json (the contract shape of DESIGN.md) plus its report metrics."""
    t = r.target
    section = {
        "metric": t.metric.name,
        "greater_is_better": t.metric.greater_is_better,
        "problem": t.problem,
        "n_labelled": int(len(r.y)),
        "models": {m.model: {"cv": m.cv, "folds": m.fold_scores, "seconds": m.seconds, "key": m.run_key,
                             "reused": m.reused} for m in r.results},
        "stack": r.stacked.summary,
        "ablation": r.ablation,
    }
    if t.is_classification:
        section["classes"] = list(t.classes)
    names = t.report_metrics or FOR_PROBLEM[t.problem]
    section["stack_scores"] = {name: METRICS[name](r.y, r.stacked.oof) for name in names}
    return section


def build_metrics(task: str, reports: list[TargetReport], n_folds: int,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's metrics: the primary (first) target's figures at the top level, as DESIGN.md's contract has
    them, and one entry per target under ``targets`` when the task has several."""
    primary = target_metrics(reports[0])
    metrics = {"task": task, "target": reports[0].target.name, "n_folds": n_folds, **primary}
    if len(reports) > 1:
        metrics["targets"] = {r.target.name: target_metrics(r) for r in reports}
    metrics.update(extra or {})
    return metrics


def _save(fig: plt.Figure, path: Path) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path.name


def plot_cv(results: list[ModelResult], stack_cv: float | None, metric: str, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * (len(results) + 1)))
    names = [r.model for r in results]
    for i, r in enumerate(results):
        ax.scatter(r.fold_scores, [i] * len(r.fold_scores), color="0.6", s=14, zorder=2)
        ax.scatter([r.cv], [i], color="C0", s=40, zorder=3)
    if stack_cv is not None:
        names.append("stack")
        ax.scatter([stack_cv], [len(results)], color="C3", s=50, zorder=3)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel(f"CV {metric} (grey: folds, colour: overall)")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_oof(y: np.ndarray, oof: np.ndarray, title: str, path: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].hexbin(oof, y, gridsize=40, bins="log", cmap="viridis", extent=(0, 1, 0, 1))
    edges = np.quantile(oof, np.linspace(0, 1, 21))
    bins = np.clip(np.searchsorted(edges, oof, side="right") - 1, 0, 19)
    means = [(oof[bins == b].mean(), y[bins == b].mean()) for b in range(20) if (bins == b).any()]
    axes[0].plot(*zip(*means), "o-", color="C3", label="binned mean target")
    axes[0].plot([0, 1], [0, 1], "--", color="white", lw=1)
    axes[0].set(xlabel="out-of-fold prediction", ylabel="target", title=title)
    axes[0].legend(loc="upper left")
    lo, hi = float(min(y.min(), oof.min())), float(max(y.max(), oof.max()))
    shared = np.linspace(lo, max(hi, lo + 1e-6), 41)  # one set of edges: also when predictions barely vary
    axes[1].hist(y, bins=shared, alpha=0.6, label="target", density=True)
    axes[1].hist(oof, bins=shared, alpha=0.6, label="OOF prediction", density=True)
    axes[1].set(xlabel="value", title="distributions")
    axes[1].legend()
    return _save(fig, path)


def plot_importance(importance: dict[str, float], title: str, path: Path, top: int = 25) -> str:
    items = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:top][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(items) + 1))
    ax.barh([k for k, _ in items], [v for _, v in items], color="C2")
    ax.set(title=title, xlabel="gain (mean over folds)")
    return _save(fig, path)


def plot_residuals_by_group(y: np.ndarray, oof: np.ndarray, groups: np.ndarray, title: str, path: Path) -> str:
    """Mean residual (bias) and RMSE of the OOF predictions per group, largest groups first."""
    import pandas as pd

    frame = pd.DataFrame({"g": groups, "res": oof - y})
    stats = frame.groupby("g")["res"].agg(n="size", bias="mean", rmse=lambda r: float(np.sqrt(np.mean(r ** 2))))
    stats = stats.sort_values("n", ascending=False).head(20)[::-1]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.3 * len(stats) + 1.2), sharey=True)
    axes[0].barh(stats.index.astype(str), stats["bias"], color=np.where(stats["bias"] > 0, "C3", "C0"))
    axes[0].axvline(0, color="k", lw=0.8)
    axes[0].set(title=f"{title}: mean residual (pred - target)")
    axes[1].barh(stats.index.astype(str), stats["rmse"], color="C2")
    axes[1].set(title="RMSE")
    for i, n in enumerate(stats["n"]):
        axes[1].text(stats["rmse"].iloc[i], i, f" n={n}", va="center", fontsize=8)
    return _save(fig, path)


def plot_bars(values: dict[str, float], title: str, xlabel: str, path: Path) -> str:
    items = list(values.items())[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(items) + 1))
    ax.barh([k for k, _ in items], [v for _, v in items], color=["C3" if v < 0 else "C0" for _, v in items])
    ax.axvline(0, color="k", lw=0.8)
    ax.set(title=title, xlabel=xlabel)
    return _save(fig, path)


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.5f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def plot_confusion(y: np.ndarray, pred: np.ndarray, classes: tuple[str, ...], title: str, path: Path,
                   top: int = 15) -> str:
    """Row-normalised confusion matrix of the ``top`` most frequent classes (the rest pooled as "other")."""
    counts = np.bincount(y, minlength=len(classes))
    shown = np.argsort(-counts, kind="stable")[:top]
    other = len(shown)
    pos = np.full(len(classes), other)
    pos[shown] = np.arange(len(shown))
    names = [str(classes[c])[:24] for c in shown] + (["other"] if len(classes) > len(shown) else [])
    k = len(names)
    matrix = np.zeros((k, k))
    np.add.at(matrix, (np.minimum(pos[y], k - 1), np.minimum(pos[pred], k - 1)), 1)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * k, 0.8 + 0.45 * k))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if matrix[i, j]:
                ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set(xlabel="predicted (out of fold)", ylabel="true", title=title)
    return _save(fig, path)


def plot_calibration(y: np.ndarray, prob: np.ndarray, title: str, path: Path) -> str:
    """Reliability curve of binary probabilities (quantile bins) with their histogram."""
    from sklearn.calibration import calibration_curve

    true, predicted = calibration_curve(y, prob, n_bins=10, strategy="quantile")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot([0, 1], [0, 1], "--", color="0.5", lw=1)
    axes[0].plot(predicted, true, "o-", color="C3")
    axes[0].set(xlabel="mean predicted probability", ylabel="observed share of positives", title=title)
    axes[1].hist(prob, bins=40, color="C0")
    axes[1].set(xlabel="predicted probability (out of fold)", title="distribution")
    return _save(fig, path)


def class_table(y: np.ndarray, pred: np.ndarray, classes: tuple[str, ...], top: int = 30) -> str:
    """Per-class precision, recall and F1 of the out-of-fold classes, most frequent classes first."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = np.arange(len(classes))
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    order = np.argsort(-support, kind="stable")[:top]
    return _table([[classes[c], int(support[c]), float(precision[c]), float(recall[c]), float(f1[c])]
                   for c in order], ["class", "n", "precision", "recall", "F1"])


def _target_section(r: TargetReport, section: dict[str, Any], run_dir: Path, single: bool,
                    images: list[tuple[str, str]]) -> list[str]:
    """HTML and plots of one target."""
    t = r.target
    metric = t.metric.name
    direction = "higher is better" if t.metric.greater_is_better else "lower is better"
    tag = "" if single else f"_{_slug(t.name)}"
    oof = r.stacked.oof
    stack = section["stack"]
    plots = [("CV by model", plot_cv(r.results, stack.get("cv"), f"{metric} ({direction})",
                                     run_dir / f"cv_by_model{tag}.png"))]
    if t.is_classification:
        labels = to_labels(oof)
        plots.append(("Stack: confusion matrix (out of fold)",
                      plot_confusion(r.y, labels, t.classes, f"{t.name}: stack", run_dir / f"confusion{tag}.png")))
        if t.problem == "binary":
            plots.append(("Stack: calibration (out of fold)",
                          plot_calibration(r.y, oof[:, 0], f"{t.name}: stack", run_dir / f"calibration{tag}.png")))
    else:
        plots.append(("Stack: out-of-fold prediction against target",
                      plot_oof(r.y, oof[:, 0], "stack", run_dir / f"oof_stack{tag}.png")))
        for name, values in r.groups.items():
            plots.append((f"Stack residuals by {name}", plot_residuals_by_group(
                r.y, oof[:, 0], values, name, run_dir / f"residuals_{_slug(name)}{tag}.png")))
    weights = stack.get("weights", {})
    if len(weights) > 1:
        plots.append(("Blend weights", plot_bars(weights, f"weights ({stack.get('method')})", "weight",
                                                 run_dir / f"blend_weights{tag}.png")))
    if r.ablation:
        deltas = {k: v["delta"] for k, v in r.ablation.items() if k != "all blocks"}
        plots.append(("Feature block ablation", plot_bars(
            deltas, "CV change when the variant replaces all blocks", f"how much worse, {metric} (+ = the block helps)",
            run_dir / f"ablation{tag}.png")))
    for m in r.results:
        if m.importance:
            plots.append((f"{m.model}: feature importance",
                          plot_importance(m.importance, m.model, run_dir / f"importance_{m.model}{tag}.png")))
    images += [(cap if single else f"{t.name}: {cap}", src) for cap, src in plots]
    model_rows = [[m, v["cv"], " ".join(f"{s:.4f}" for s in v["folds"]), float(np.std(v["folds"])),
                   f"{v['seconds']:.1f}", "reused" if v.get("reused") else "trained"]
                  for m, v in section["models"].items()]
    what = (f"{t.problem}" + (f", {t.n_classes} classes" if t.is_classification else "") +
            f", metric {metric} ({direction}), {section['n_labelled']} labelled rows")
    parts = [] if single else [f"<h2>Target {html.escape(t.name)}</h2>"]
    parts += [
        f"<p>target <b>{html.escape(t.name)}</b>: {html.escape(what)}</p>",
        "<h3>Level-1 models</h3>",
        _table(model_rows, ["model", f"CV {metric}", "folds", "fold std", "fit seconds", "status"]),
        "<h3>Stack</h3>",
        _table([[key, b["cv"], b["cv_in_sample"], ", ".join(f"{k}={v:.3f}" for k, v in b["weights"].items()),
                 "chosen" if key == stack.get("method") else ""] for key, b in stack.get("blenders", {}).items()]
               or [[stack.get("method", ""), stack.get("cv"), stack.get("cv_in_sample"), "", "chosen"]],
               ["blender", f"CV {metric} (nested, honest)", "in-sample (optimistic)", "weights", ""]),
        _table([[k, v] for k, v in section["stack_scores"].items()], ["stack, out of fold", "score"]),
    ]
    if t.is_classification:
        parts += ["<h3>Per class (stack, out of fold)</h3>", class_table(r.y, to_labels(oof), t.classes)]
    if stack.get("without_model"):
        parts += ["<h3>Model ablation: the stack without each model</h3>",
                  _table([[k, v["cv"], v["delta"]] for k, v in stack["without_model"].items()],
                         ["left out", f"stack CV {metric} (nested)", "how much worse without it (+ = it helps)"])]
    if r.ablation:
        parts += ["<h3>Feature block ablation</h3>",
                  _table([[k, v["cv"], v.get("delta", "")] for k, v in r.ablation.items()],
                         ["variant", f"CV {metric}", "how much worse than all blocks"])]
    return parts


def plot_time(metrics: dict[str, Any], path: Path) -> str:
    """Where the run's time went: each pipeline step, and within features and models each block and model."""
    steps = metrics.get("seconds", {})
    parts = [(f"step: {k}", v) for k, v in steps.items()]
    parts += [(f"block: {k}", v.get("seconds", 0.0)) for k, v in metrics.get("features", {}).items()]
    sections = metrics.get("targets") or {metrics.get("target", ""): metrics}
    for name, section in sections.items():
        tag = f" ({name})" if len(sections) > 1 else ""
        parts += [(f"model: {k}{tag}", 0.0 if v.get("reused") else v.get("seconds", 0.0))
                  for k, v in section.get("models", {}).items()]
    parts = parts[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(parts) + 1))
    colours = ["C0" if k.startswith("step") else "C2" if k.startswith("block") else "C1" for k, _ in parts]
    ax.barh([k for k, _ in parts], [v for _, v in parts], color=colours)
    ax.set(xlabel="seconds (this run; reused work counts 0)", title="where the time went")
    return _save(fig, path)


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def write_report(run_dir: Path, metrics: dict[str, Any], reports: list[TargetReport],
                 step_seconds: dict[str, float], config_diff: list[str], extra_html: list[str] | None = None,
                 extra_images: list[tuple[str, str]] | None = None) -> Path:
    """Write metrics.json, the plots and report.html into ``run_dir``; returns the report's path. ``extra_html``
    and ``extra_images`` (caption, png name in ``run_dir``): a task's own sections, after the targets'."""
    write_json(run_dir / "metrics.json", metrics)
    single = len(reports) == 1
    sections = metrics.get("targets") or ({reports[0].target.name: metrics} if reports else {})
    images: list[tuple[str, str]] = []
    parts = [
        f"<h1>mmstack run {html.escape(metrics.get('run_id', ''))}</h1>",
        f"<p>task <b>{html.escape(metrics['task'])}</b>, {metrics['n_folds']} folds, "
        f"{metrics.get('n_train', '?')} train rows, {metrics.get('n_test', '?')} test rows, "
        f"{len(reports)} target{'s' if len(reports) > 1 else ''}</p>",
    ]
    for r in reports:
        parts += _target_section(r, sections[r.target.name], run_dir, single, images)
    if metrics.get("seconds"):
        images.append(("Where the time went", plot_time(metrics, run_dir / "time.png")))
    if metrics.get("budget"):
        b = metrics["budget"]
        parts += [f"<h2>Time limit</h2><p>limit {b['limit']:.0f} s, run took {b['seconds']:.0f} s before the report; "
                  f"{len(b['skipped'])} thing(s) skipped to fit.</p>",
                  _table([[s["kind"], s["name"], s["why"], s["at_seconds"]] for s in b["skipped"]]
                         or [["", "nothing", "", ""]], ["skipped", "name", "why", "at second"])]
    parts += list(extra_html or [])
    images += list(extra_images or [])
    parts += ["<h2>Time per step</h2>", _table([[k, f"{v:.1f}"] for k, v in step_seconds.items()], ["step", "seconds"]),
              "<h2>Config changes since the previous run</h2>",
              "<pre>" + html.escape("\n".join(config_diff) or "(none)") + "</pre>", "<h2>Plots</h2>"]
    parts += [f"<figure><img src='{html.escape(src)}' alt='{html.escape(cap)}'><figcaption>{html.escape(cap)}"
              f"</figcaption></figure>" for cap, src in images]
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "th{background:#f0f0f0}img{max-width:100%}figure{margin:1.5em 0}")
    # lets a headless browser (and the tests) confirm that every plot loaded
    check = ("<script>window.addEventListener('load',function(){var i=[].slice.call(document.images);"
             "document.body.setAttribute('data-images-ok',i.filter(function(x){return x.complete&&x.naturalWidth>0})"
             ".length+'/'+i.length);});</script>")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>mmstack report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}{check}</body></html>\n")
    path = run_dir / "report.html"
    write_text(path, page)
    return path
