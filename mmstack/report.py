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

from .models.base import ModelResult  # noqa: E402
from .store import atomic_path, write_json, write_text  # noqa: E402

log = logging.getLogger(__name__)


def build_metrics(task: str, metric: str, n_folds: int, results: list[ModelResult], stack: dict[str, Any],
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's metrics in the contract shape of DESIGN.md (plus run details under extra keys)."""
    metrics = {
        "task": task,
        "metric": metric,
        "n_folds": n_folds,
        "models": {r.model: {"cv": r.cv, "folds": r.fold_scores, "seconds": r.seconds, "key": r.run_key,
                             "reused": r.reused} for r in results},
        "stack": stack,
    }
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


def write_report(run_dir: Path, metrics: dict[str, Any], y: np.ndarray, results: list[ModelResult],
                 stack_oof: np.ndarray, step_seconds: dict[str, float], config_diff: list[str],
                 groups: dict[str, np.ndarray] | None = None) -> Path:
    """Write metrics.json, the plots and report.html into ``run_dir``; returns the report's path.

    ``groups`` maps a column name to its value per training row, for the residuals-by-group plots.
    """
    write_json(run_dir / "metrics.json", metrics)
    metric = metrics["metric"]
    images = [("CV by model", plot_cv(results, metrics["stack"].get("cv"), metric, run_dir / "cv_by_model.png")),
              ("Stack: out-of-fold prediction against target", plot_oof(y, stack_oof, "stack", run_dir / "oof_stack.png"))]
    for name, values in (groups or {}).items():
        images.append((f"Stack residuals by {name}",
                       plot_residuals_by_group(y, stack_oof, values, name, run_dir / f"residuals_{name}.png")))
    stack_weights = metrics["stack"].get("weights", {})
    if len(stack_weights) > 1:
        images.append(("Blend weights", plot_bars(stack_weights, f"weights ({metrics['stack'].get('method')})",
                                                   "weight", run_dir / "blend_weights.png")))
    if metrics.get("ablation"):
        deltas = {k: v["delta"] for k, v in metrics["ablation"].items() if k != "all blocks"}
        images.append(("Feature block ablation", plot_bars(
            deltas, "CV change when the variant replaces all blocks", f"delta CV {metric} (+ = worse without)",
            run_dir / "ablation.png")))
    for r in results:
        if r.importance:
            images.append((f"{r.model}: feature importance",
                           plot_importance(r.importance, r.model, run_dir / f"importance_{r.model}.png")))
    model_rows = [[m, v["cv"], " ".join(f"{s:.4f}" for s in v["folds"]), float(np.std(v["folds"])), f"{v['seconds']:.1f}",
                   "reused" if v.get("reused") else "trained"] for m, v in metrics["models"].items()]
    stack = metrics["stack"]
    parts = [
        f"<h1>mmstack run {html.escape(metrics.get('run_id', ''))}</h1>",
        f"<p>task <b>{html.escape(metrics['task'])}</b>, metric {html.escape(metric)}, {metrics['n_folds']} folds, "
        f"{metrics.get('n_train', '?')} train rows, {metrics.get('n_test', '?')} test rows</p>",
        "<h2>Level-1 models</h2>",
        _table(model_rows, ["model", f"CV {metric}", "folds", "fold std", "fit seconds", "status"]),
        "<h2>Stack</h2>",
        _table([[key, b["cv"], b["cv_in_sample"], ", ".join(f"{k}={v:.3f}" for k, v in b["weights"].items()),
                 "chosen" if key == stack.get("method") else ""] for key, b in stack.get("blenders", {}).items()]
               or [[stack.get("method", ""), stack.get("cv"), stack.get("cv_in_sample"), "", "chosen"]],
               ["blender", f"CV {metric} (nested, honest)", "in-sample (optimistic)", "weights", ""]),
    ]
    if stack.get("without_model"):
        parts += ["<h2>Model ablation: the stack without each model</h2>",
                  _table([[k, v["cv"], v["delta"]] for k, v in stack["without_model"].items()],
                         ["left out", f"stack CV {metric} (nested)", "delta vs full stack (+ = the model helps)"])]
    if metrics.get("ablation"):
        parts += ["<h2>Feature block ablation</h2>",
                  _table([[k, v["cv"], v.get("delta", "")] for k, v in metrics["ablation"].items()],
                         ["variant", f"CV {metric}", "delta vs all blocks"])]
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
