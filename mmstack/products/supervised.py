"""The supervised product embedding: the fusion net with one softmax head per label column (``[proxy] supervised``).

The label-free embedding (the ``product_embed`` block, contrastive only) blurs what a label needs and the
image/text agreement does not carry (a few dozen children's products among thousands, the exact article word of
seventy sub-categories). Retraining the same net with class-weighted heads on every label column beside the
contrastive loss keeps it. Because that embedding reads labels, its proxy figures are nested: the labelled rows
are split once into folds grouped by product (``fold_group``), and for each fold a net is fitted on the labels of
the other folds only and embeds the held-out rows; protocol (a) then trains on the other folds' rows and scores the
held-out ones. No figure reads the label of the row it scores, also not through the embedding. The embedding
written to embeddings.parquet (and exported to ONNX) is fitted once on every labelled row.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .fusion import ProductEmbedder, supervised_embedder

log = logging.getLogger(__name__)

EMBED_BLOCK, IMAGES_BLOCK = "product_embed", "product_images"


def enabled(config) -> bool:
    return bool((config.get("proxy") or {}).get("supervised", False))


def label_codes(targets, n_rows: int) -> dict[str, tuple[np.ndarray, int]]:
    """Per classification target: its codes on every row (-1 where the label is missing) and its class count."""
    out = {}
    for t in targets:
        if t.target.problem == "regression":
            continue
        codes = np.full(n_rows, -1, np.int64)
        codes[t.rows] = np.asarray(t.y, np.int64)
        out[t.target.name] = (codes, t.target.n_classes)
    return out


def labelled_rows(labels: dict[str, tuple[np.ndarray, int]]) -> np.ndarray:
    """Rows with at least one label (of :func:`label_codes`)."""
    if not labels:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.any([c >= 0 for c, _ in labels.values()], axis=0))


def tower_inputs(embed_output, images_output, n_rows: int) -> tuple[np.ndarray, ...]:
    """The towers' inputs of every row from the blocks: image, image_present, text, text_present."""
    if images_output is not None:
        image = np.asarray(images_output.extras["pooled"], np.float32)
        present = np.asarray(images_output.extras["present"]).astype(np.float32)
    else:
        from .fusion import IMAGE_DIM

        image, present = np.zeros((n_rows, IMAGE_DIM), np.float32), np.zeros(n_rows, np.float32)
    return (image, present, np.asarray(embed_output.extras["text"], np.float32),
            np.asarray(embed_output.extras["text_present"], np.float32))


def _fit(embedder: ProductEmbedder, inputs: tuple[np.ndarray, ...], labels, rows: np.ndarray, params: dict,
         seed: int) -> ProductEmbedder | None:
    return supervised_embedder(embedder, *inputs, labels, rows, seed, float(params.get("head_weight", 3.0)),
                               float(params.get("class_power", 1.0)))


def final_embedder(config, targets, embed_output, images_output) -> ProductEmbedder:
    """The embedder to write and serve: supervised on every labelled row when ``[proxy] supervised`` is on and
    the towers can be trained; else the block's label-free one."""
    embedder = embed_output.extras["embedder"]
    if not enabled(config):
        return embedder
    n = len(embed_output.extras["text"])
    labels = label_codes(targets, n)
    rows = labelled_rows(labels)
    fitted = _fit(embedder, tower_inputs(embed_output, images_output, n), labels, rows,
                  config.get("proxy") or {}, config.seed) if len(rows) else None
    return fitted or embedder


def nested_folds(rows_frame, labelled: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold of each row (-1: not labelled): GroupKFold by ``fold_group`` (listings of one product together)."""
    from sklearn.model_selection import GroupKFold

    groups = (rows_frame["fold_group"].astype(str).to_numpy() if "fold_group" in rows_frame
              else np.arange(len(rows_frame)).astype(str))
    fold = np.full(len(rows_frame), -1, np.int64)
    k = min(n_folds, len(np.unique(groups[labelled])))
    for f, (_, valid) in enumerate(GroupKFold(n_splits=k, shuffle=True, random_state=seed)
                                   .split(labelled, groups=groups[labelled])):
        fold[labelled[valid]] = f
    return fold


def nested_embeddings(context) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """``(fold of each row, [embedding of every row by the net fitted without fold k's labels])``, or None
    when the towers cannot be trained."""
    embed_output = context.cache.outputs[EMBED_BLOCK]
    embedder = embed_output.extras["embedder"]
    if embedder.linear:
        return None
    n = len(embed_output.extras["text"])
    labels = label_codes([r.data for r in context.runs], n)
    if not labels:
        return None
    labelled = labelled_rows(labels)
    params = context.config.get("proxy") or {}
    fold = nested_folds(context.data.all_rows(), labelled, int(context.config.get("folds.n_folds") or 5),
                        context.config.seed)
    inputs = tower_inputs(embed_output, context.cache.outputs.get(IMAGES_BLOCK), n)
    out = []
    for k in range(int(fold.max()) + 1):
        fitted = _fit(embedder, inputs, labels, np.flatnonzero((fold >= 0) & (fold != k)), params,
                      context.config.seed + k)
        if fitted is None:
            return None
        out.append(fitted.embed(*inputs))
        log.info("proxy: supervised embedding of fold %d/%d fitted on the other folds' labels", k + 1, fold.max() + 1)
    return fold, out


def nested_protocol(fold: np.ndarray, embeddings: list[np.ndarray], data, params: dict[str, Any], seed: int,
                    kinds: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Protocol (a) of one target on the nested embeddings: for fold k, a classifier trained on the target's
    labelled rows of the other folds (embedded by net k) scores its rows in fold k."""
    from .proxy import fit_predict, scores

    target = data.target
    row_fold = fold[data.rows]
    out = {}
    for kind in kinds:
        probs = np.zeros((len(data.rows), target.n_classes))
        for k, X in enumerate(embeddings):
            train, valid = np.flatnonzero(row_fold != k), np.flatnonzero(row_fold == k)
            if len(valid):
                fit_predict(kind, X[data.rows], data.y, train, valid, probs, params, seed)
        pred = target.finish(probs[:, 1:] if target.problem == "binary" else probs)
        out[kind] = scores(target, data.y, pred)
        log.info("proxy %s (%s on the nested supervised embedding): %s", target.name, kind,
                 ", ".join(f"{k}={v:.4f}" for k, v in out[kind].items() if isinstance(v, float)))
    return out
