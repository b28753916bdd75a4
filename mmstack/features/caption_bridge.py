"""caption_bridge: a learned image -> text map, fitted on the captions of *other* training images, out of fold.

A query_id names the image its text was written for (``<image>#n``): among the training images, those pairs
(image, caption) teach a ridge map from EfficientNet-Lite0 features to the sentence-embedding space, a linear,
home-grown bridge that knows people, dogs and beaches where the ImageNet label bridge does not. Per pair the
features are the cosine between the query and the mapped candidate image, and the best and the similarity-weighted
mean cosine between the query and the captions of the training images most like the candidate (its neighbours).

The captions are supervision, so the block reads them like a target: strictly out of fold on the shared folds
(grouped by image), nested for the rows a model trains on (``Folds.out_of_fold``). A candidate image's own captions
never reach its features: its fold, and with it all its pairs and captions, is left out of the map that scores
it. Test rows use the map fitted on all training images, except a test pair whose image is a training image: it
gets the map of that image's validation fold.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge

from ..errors import ConfigError
from .base import BlockContext, BlockOutput, FeatureBlock
from ..projection import unit_rows
from .registry import register


COLUMNS = ("cos", "knn_max", "knn_wmean")


def caption_images(train: pd.DataFrame, image_index: np.ndarray) -> pd.Series:
    """Per training row: the distinct-image index (``image_index`` of the rows) of the image its query was written
    for, read from the query_id (``<image file>#n``); NaN when that image is not a training image of the data."""
    image_of_id = dict(zip(train["image_id"], image_index))
    source = train["query_id"].astype(str).str.split("#").str[0].str.rpartition(".")[0]
    return source.map(image_of_id)


@register
class CaptionBridgeBlock(FeatureBlock):
    name = "caption_bridge"
    version = "4"
    reads_target = True  # captions of training images are supervision
    depends_on = ("pair_match",)
    default_params = {"alpha": 30.0, "neighbours": 10}

    def check_folds(self, folds) -> None:
        # an image's captions are its label: with pairs of one image in several folds, a candidate's own captions
        # would reach its features through the map fitted on the other folds
        folds.require_grouped_by("image", "features.caption_bridge")

    def __init__(self, params=None):
        super().__init__(params)
        if not float(self.params["alpha"]) > 0:
            raise ConfigError("features.caption_bridge.alpha must be positive")
        self.require_ints({"neighbours": 0})

    def build(self, ctx: BlockContext) -> BlockOutput:
        pm = ctx.inputs["pair_match"].extras
        data = ctx.data
        rows = data.all_rows()
        image_index = np.asarray(pm["image_index"])
        query_index = np.asarray(pm["query_index"])
        pooled = np.asarray(pm["image_pooled"], np.float64)
        ok = np.asarray(pm["image_ok"], bool)
        # captions: distinct training queries whose source image is a readable training image of the data
        caption_image = caption_images(rows.iloc[:data.n_train], image_index[:data.n_train])
        has = caption_image.notna().to_numpy() & ~pd.Series(query_index[:data.n_train]).duplicated().to_numpy()
        captions = pd.DataFrame({"image": caption_image[has].astype(int).to_numpy(),
                                 "query": query_index[:data.n_train][has]})
        captions = captions[ok[captions["image"]]]
        row_image = image_index
        labelled = ctx.target.rows
        fold_images = [np.unique(row_image[labelled][ctx.folds.fold == k]) for k in range(ctx.folds.n_folds)]
        unlabelled = np.setdiff1d(np.arange(data.n_rows), labelled)
        mean, std = pooled[ok].mean(axis=0), pooled[ok].std(axis=0) + 1e-6
        z = (pooled - mean) / std
        out, views = {}, {k: {} for k in range(ctx.folds.n_folds)}
        # the map on all training images, kept to score images met later (search)
        extras = {"mean": mean, "std": std, "memory": {}}
        for name in sorted(k for k in pm if k.startswith("qvec_")):
            q = np.asarray(pm[name], np.float64)

            def fit(train_rows: np.ndarray, q=q) -> dict[str, np.ndarray]:
                allowed = np.zeros(len(pooled), bool)
                allowed[row_image[train_rows]] = True
                use = captions[allowed[captions["image"].to_numpy()]]
                return fit_memory(z[use["image"]], q[use["query"]], float(self.params["alpha"]))

            def apply(memory: dict[str, np.ndarray], ids: np.ndarray, q=q) -> np.ndarray:
                return score_pairs(memory, z, ok, q, row_image[ids], query_index[ids], self.params["neighbours"])

            values, fold_views = ctx.folds.out_of_fold(fit, apply, data.n_rows)
            # a test pair whose image is a training image is scored like that image's validation rows: by the
            # map that never saw the image's own captions
            for k in range(ctx.folds.n_folds):
                ids = unlabelled[np.isin(row_image[unlabelled], fold_images[k])]
                if len(ids):
                    values[ids] = apply(fit(labelled[ctx.folds.fold != k]), ids)
            extras["memory"][name] = fit(labelled)
            columns = [f"cb_{name.removeprefix('qvec_')}_{c}" for c in COLUMNS]
            for j, column in enumerate(columns):
                out[column] = values[:, j].astype(np.float32)
                for k, view in fold_views.items():
                    views[k][column] = view[:, j].astype(np.float32)
        return BlockOutput(dense=pd.DataFrame(out), extras=extras,
                           train_views={k: pd.DataFrame(v) for k, v in views.items()})


def fit_memory(z_images: np.ndarray, q_captions: np.ndarray, alpha: float) -> dict[str, np.ndarray]:
    """From caption items (standardised image features, unit caption vectors): the ridge map image -> text and
    the items themselves, for the nearest-caption scores."""
    if len(z_images) < 2:
        weights = np.zeros((z_images.shape[1], q_captions.shape[1]))
    else:
        weights = Ridge(alpha=alpha, fit_intercept=False).fit(z_images, q_captions).coef_.T
    return {"weights": weights, "images": unit_rows(z_images), "captions": q_captions}


def score_pairs(memory: dict[str, np.ndarray], z: np.ndarray, ok: np.ndarray, q: np.ndarray,
                image_codes: np.ndarray, query_codes: np.ndarray, neighbours: int) -> np.ndarray:
    """Per pair (distinct image ``image_codes[i]`` of ``z``, distinct query ``query_codes[i]`` of ``q``):
    the cosine of the query with the mapped image, and the best and the image-similarity-weighted mean cosine
    of the query with the captions of the ``neighbours`` most similar caption items' images."""
    out = np.full((len(image_codes), len(COLUMNS)), np.nan)
    present = ok[image_codes]
    mapped = unit_rows(z @ memory["weights"])
    out[:, 0] = np.einsum("nd,nd->n", mapped[image_codes], q[query_codes])
    m = min(neighbours, len(memory["captions"]))
    if m:
        sims = unit_rows(z) @ memory["images"].T  # distinct images x caption items
        # one spare neighbour: a caption with the query's own text is skipped. A query is new at search time,
        # so scoring it against itself as a remembered caption would not match search (on Flickr8k the stacked
        # MSE was 0.0338 either way; retrieval of test queries' images went 0.276 -> 0.284 top-1 without it)
        top = np.argsort(-sims, axis=1)[:, :m + 1]
        weight = np.clip(np.take_along_axis(sims, top, axis=1), 0, None)[image_codes]
        text = (q @ memory["captions"].T)  # distinct queries x caption items
        match = np.take_along_axis(text[query_codes], top[image_codes], axis=1)
        same = match > 0.9999
        keep = ~same & (np.cumsum(~same, axis=1) <= m)
        weight = np.where(keep, weight, 0.0)
        out[:, 1] = np.where(keep, match, -np.inf).max(axis=1)
        out[:, 2] = (weight * np.where(keep, match, 0.0)).sum(axis=1) / np.maximum(weight.sum(axis=1), 1e-12)
    out[~present] = np.nan
    return out


def bridge_cosines(extras, pooled: np.ndarray, ok: np.ndarray, query_vectors: dict[str, np.ndarray],
                   query_codes: np.ndarray, image_codes: np.ndarray, neighbours: int) -> pd.DataFrame:
    """The block's columns for new pairs, from the memory of all training images (as for test rows).
    ``query_vectors`` holds unit vectors per distinct query under the pair_match extras' names (``qvec_use``...)."""
    z = (np.asarray(pooled, np.float64) - extras["mean"]) / extras["std"]
    out = {}
    for name, memory in sorted(extras["memory"].items()):
        values = score_pairs(memory, z, ok, query_vectors[name], image_codes, query_codes, neighbours)
        for j, c in enumerate(COLUMNS):
            out[f"cb_{name.removeprefix('qvec_')}_{c}"] = values[:, j].astype(np.float32)
    return pd.DataFrame(out)
