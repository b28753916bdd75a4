"""The products task's outputs beside predictions.csv: embeddings.parquet, duplicates.csv, the ``proxy`` entry of
metrics.json and the report's proxy table, embedding map and duplicate strip."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from ..pipeline import RunContext, TaskOutputs
from ..store import write_parquet, write_text
from . import duplicates as dup
from . import supervised
from .proxy import embedding_protocol, scores

log = logging.getLogger(__name__)

EMBED_BLOCK, IMAGES_BLOCK = "product_embed", "product_images"


def embedding_of(context: RunContext) -> np.ndarray:
    """The product embedding of every row (row-id order), from the ``product_embed`` block."""
    out = context.cache.outputs.get(EMBED_BLOCK)
    if out is None:
        from ..errors import ConfigError

        raise ConfigError("the products task needs the product_embed block in features.blocks")
    return out.dense.to_numpy(np.float32)


def embeddings_frame(ids: pd.Series, embedding: np.ndarray) -> pd.DataFrame:
    """``nm, e0..e{d-1}`` (float32, unit rows)."""
    frame = pd.DataFrame(embedding.astype(np.float32), columns=[f"e{j}" for j in range(embedding.shape[1])])
    frame.insert(0, "nm", ids.to_numpy())
    return frame


def proxy_entry(context: RunContext, embedding: np.ndarray) -> dict[str, Any]:
    """Per label: n, classes, protocol (a) per classifier on the embedding alone, protocol (b) the stacked kit.
    With ``[proxy] supervised`` protocol (a) reads the nested supervised embeddings (:mod:`.supervised`) and the
    label-free embedding's figures move to ``embedding_label_free``."""
    params = context.config.get("proxy") or {}
    kinds = tuple(params.get("classifiers", ["logreg", "mlp"]))
    nested = supervised.nested_embeddings(context) if supervised.enabled(context.config) else None
    label_free = embedding_of(context)
    out: dict[str, Any] = {}
    for r in context.runs:
        t = r.target
        entry = {"problem": t.problem, "n": int(len(r.data.y)), "n_classes": t.n_classes}
        if nested is not None:
            entry["embedding"] = supervised.nested_protocol(*nested, r.data, params, context.config.seed, kinds)
            # the label-free embedding for comparison: logistic regression only (the MLP costs most of the time)
            entry["embedding_label_free"] = embedding_protocol(label_free, r.data, params, context.config.seed,
                                                               kinds[:1])
        else:
            entry["embedding"] = embedding_protocol(embedding, r.data, params, context.config.seed, kinds)
        entry["kit"] = scores(t, r.data.y, r.stacked.oof)
        if t.name == "price_range" and "price_bins" in context.data.extras:
            bins = context.data.extras["price_bins"]
            entry["bins"] = {b: [float(lo), float(hi)] for b, lo, hi in zip(bins["bin"], bins["from"], bins["to"])}
        out[t.name] = entry
    return out


def duplicate_inputs(context: RunContext, embedding: np.ndarray) -> dup.DuplicateInputs:
    rows = context.data.all_rows()
    images = context.cache.outputs.get(IMAGES_BLOCK)
    phash = list(images.extras["phash"]) if images is not None else [np.zeros(0, np.int64)] * len(rows)
    return dup.DuplicateInputs(embedding, rows["title"].tolist(), phash).fit_text()


def find_duplicates(context: RunContext, embedding: np.ndarray) -> tuple[dict[str, Any], pd.DataFrame, list]:
    """CV figures on the rows with a group, and the matches of the rows without one (duplicates.csv)."""
    params = {**dup.DEFAULTS, "seed": context.config.seed, **(context.config.get("duplicates") or {})}
    params.pop("examples", None)
    fixed = params.pop("threshold", 0.9)
    inputs = duplicate_inputs(context, embedding)
    groups = context.data.labels["group"] if "group" in context.data.labels else pd.Series([None] * len(embedding))
    labelled = np.flatnonzero(groups.notna().to_numpy())
    unlabelled = np.flatnonzero(groups.isna().to_numpy())
    metrics: dict[str, Any] = {}
    examples: list = []
    if len(labelled) and groups.iloc[labelled].nunique() >= 2:
        if params["method"] == "pairs":  # pretrained title vectors: pair features and title-metric inputs
            inputs.embed_titles(params["title_encoders"])
            if params["title_metric"]:
                inputs.fit_metric_features(params["metric_components"], context.config.seed)
        result = dup.cross_validate(inputs, labelled, groups.iloc[labelled].to_numpy(), params)
        metrics, examples = result.metrics, result.examples
    else:  # no labelled groups to learn from: embedding cosine at a fixed threshold
        params["method"] = "embedding"
        result = dup.MatchResult({}, None, float(fixed))
        metrics = {"method": "embedding", "threshold": float(fixed), "note": "no labelled groups: nothing to score"}
    matches = dup.match_pool(inputs, unlabelled, result, params)
    ids = context.data.all_rows()[context.spec.key_columns[0]].astype(str).to_numpy()
    frame = pd.DataFrame({"nm": ids[unlabelled], "matches": [" ".join(ids[m]) for m in matches]})
    metrics["n_matched_rows"] = int(len(unlabelled))
    return metrics, frame, examples


def write_outputs(context: RunContext) -> TaskOutputs:
    """Write embeddings.parquet and duplicates.csv into the run folder; return the proxy metrics and report."""
    embedding = embedding_of(context)
    if supervised.enabled(context.config):  # the supervised embedder fitted on every labelled row
        block = context.cache.outputs[EMBED_BLOCK]
        embedder = supervised.final_embedder(context.config, [r.data for r in context.runs], block,
                                             context.cache.outputs.get(IMAGES_BLOCK))
        if embedder is not block.extras["embedder"]:
            embedding = embedder.embed(*supervised.tower_inputs(block, context.cache.outputs.get(IMAGES_BLOCK),
                                                                len(embedding)))
    rows = context.data.all_rows()
    write_parquet(context.folder / "embeddings.parquet", embeddings_frame(rows["nm"], embedding))
    proxy = proxy_entry(context, embedding)
    dup_metrics, dup_frame, examples = find_duplicates(context, embedding)
    write_text(context.folder / "duplicates.csv", dup_frame.to_csv(index=False))
    proxy["duplicates"] = dup_metrics
    from .report import duplicate_strip, embedding_map, proxy_html

    images = [("Product embeddings: 2-D t-SNE map by category", embedding_map(context, embedding, context.folder))]
    n_examples = int((context.config.get("duplicates") or {}).get("examples", 8))
    seen, distinct = set(), []
    for query, matches in examples:  # one example per matched set
        if frozenset(matches) not in seen:
            seen.add(frozenset(matches))
            distinct.append((query, matches))
    examples = distinct
    if examples and n_examples:
        strip = duplicate_strip(context, examples[:n_examples], context.folder)
        if strip:
            images.append(("Duplicates: example matches (cross-validated; green = same group)", strip))
    return TaskOutputs(metrics={"proxy": proxy}, html=proxy_html(proxy), images=images)

