"""The products task's report parts: the proxy table, a 2-D map of the embeddings by category, and a strip of
example duplicate matches with their images."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..report import _save, _table  # noqa: E402

SHOWN = ("f1_macro", "accuracy", "logloss", "f1", "precision", "recall", "auc")


def proxy_html(proxy: dict[str, Any]) -> list[str]:
    """The proxy table (one row per label and protocol) and the duplicates figures."""
    rows = []
    for label, entry in proxy.items():
        if label == "duplicates":
            continue
        protocols = [(f"(a) {k} on the embedding", v) for k, v in entry["embedding"].items()]
        protocols.append(("(b) full kit, stacked", entry["kit"]))
        for name, figures in protocols:
            rows.append([label, name, entry["n"], entry["n_classes"],
                         *[figures.get(m, "") for m in SHOWN]])
    parts = ["<h2>Proxy tasks (out of fold)</h2>",
             "<p>How well the product embedding describes a product: (a) classifiers of each label on the embedding "
             "alone, (b) the kit's level-1 models on every block plus the embedding, stacked. No figure reads the "
             "label of the row it scores.</p>",
             _table(rows, ["label", "protocol", "n", "classes", *SHOWN])]
    d = proxy.get("duplicates") or {}
    if d:
        parts += ["<h3>Duplicates</h3>", _table([[k, v if not isinstance(v, list) else " ".join(map(str, v))]
                                                 for k, v in d.items()], ["figure", "value"])]
    return parts


def map_2d(embedding: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE of unit embeddings (cosine neighbourhoods; PCA start, so repeatable); PCA below 5 rows."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    if len(embedding) < 5:
        return np.zeros((len(embedding), 2)) if len(embedding) < 3 else PCA(2).fit_transform(embedding)
    with threadpool_limits(1):
        return TSNE(n_components=2, perplexity=min(30.0, (len(embedding) - 1) / 3), init="pca", metric="cosine",
                    random_state=seed).fit_transform(embedding)


def embedding_map(context, embedding: np.ndarray, run_dir: Path, top: int = 12, sample: int = 1500) -> str:
    """A 2-D t-SNE map of (a sample of) the embeddings, coloured by category (the ``top`` largest; others
    grey)."""
    rows = np.arange(len(embedding))
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(0).choice(rows, sample, replace=False))
    xy = map_2d(embedding[rows])
    labels = context.data.labels["category"].iloc[rows] if "category" in context.data.labels else None
    fig, ax = plt.subplots(figsize=(7, 6))
    if labels is None or labels.notna().sum() == 0:
        ax.scatter(xy[:, 0], xy[:, 1], s=4, color="C0", alpha=0.5)
    else:
        values = labels.astype(object).where(labels.notna(), None).to_numpy()
        counts = labels.value_counts()
        shown = list(counts.index[:top])
        other = np.array([v not in shown for v in values])
        ax.scatter(xy[other, 0], xy[other, 1], s=4, color="0.8", label="other / unlabelled")
        cmap = plt.get_cmap("tab20")
        for c, name in enumerate(shown):
            sel = values == name
            ax.scatter(xy[sel, 0], xy[sel, 1], s=5, color=cmap(c % 20), label=str(name)[:24], alpha=0.8)
        ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set(title=f"product embeddings (t-SNE of {len(rows)} products)", xticks=[], yticks=[])
    return _save(fig, run_dir / "embedding_map.png")


def duplicate_strip(context, examples: list[tuple[int, list[int]]], run_dir: Path, per_row: int = 5) -> str | None:
    """One row per example listing: its first image, then its matches' (green: same group, red: not)."""
    source = context.data.images.get("train")
    rows = context.data.all_rows()
    groups = context.data.labels["group"].to_numpy() if "group" in context.data.labels else None
    with_images = [(q, m) for q, m in examples if rows["images"].iloc[q]]
    if source is None or not with_images:
        return None
    fig, axes = plt.subplots(len(with_images), per_row, figsize=(1.8 * per_row, 1.9 * len(with_images) + 0.4),
                             squeeze=False, constrained_layout=True)
    for r, (query, matches) in enumerate(with_images):
        for c in range(per_row):
            ax = axes[r, c]
            ax.set_axis_off()
            if c >= len(matches):
                continue
            row = matches[c]
            ids = str(rows["images"].iloc[row]).split()
            img = source.open(ids[0], draft=128) if ids else None
            if img is not None:
                img.thumbnail((128, 128))
                ax.imshow(np.asarray(img))
            same = groups is not None and groups[row] == groups[query]
            colour = "black" if c == 0 else ("green" if same else "red")
            ax.set_title(html.unescape(str(rows["title"].iloc[row]))[:22], fontsize=6, color=colour)
    fig.suptitle("duplicate matches: first column the listing, then its matches, best first", fontsize=8)
    return _save(fig, run_dir / "duplicates_examples.png")
