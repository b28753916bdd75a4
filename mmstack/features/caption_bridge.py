"""caption_bridge: a learned image -> text map, fitted on the captions of *other* training images, out of fold.

A query_id names the image its text was written for (``<image>#n``): among the training images, those pairs
(image, caption) teach a ridge map from EfficientNet-Lite0 features to the sentence-embedding space, a linear,
home-grown bridge that knows people, dogs and beaches where the ImageNet label bridge does not. Per pair the
feature is the cosine between the query and the mapped candidate image.

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
from .pair_match import normalise
from .registry import register


@register
class CaptionBridgeBlock(FeatureBlock):
    name = "caption_bridge"
    version = "2"
    reads_target = True  # captions of training images are supervision
    depends_on = ("pair_match",)
    default_params = {"alpha": 30.0}

    def __init__(self, params=None):
        super().__init__(params)
        if not float(self.params["alpha"]) > 0:
            raise ConfigError("features.caption_bridge.alpha must be positive")

    def build(self, ctx: BlockContext) -> BlockOutput:
        pm = ctx.inputs["pair_match"].extras
        data = ctx.data
        rows = data.all_rows()
        image_index = np.asarray(pm["image_index"])
        query_index = np.asarray(pm["query_index"])
        pooled = np.asarray(pm["image_pooled"], np.float64)
        ok = np.asarray(pm["image_ok"], bool)
        # captions: distinct training queries whose source image is a readable training image of the data
        train = rows.iloc[:data.n_train]
        image_of_id = dict(zip(train["image_id"], image_index[:data.n_train]))
        source = train["query_id"].astype(str).str.split("#").str[0].str.rpartition(".")[0]
        caption_image = source.map(image_of_id)
        has = caption_image.notna().to_numpy() & ~pd.Series(query_index[:data.n_train]).duplicated().to_numpy()
        captions = pd.DataFrame({"image": caption_image[has].astype(int).to_numpy(),
                                 "query": query_index[:data.n_train][has]})
        captions = captions[ok[captions["image"]]]
        row_image = image_index
        fold_images = [np.unique(row_image[:data.n_train][ctx.folds.fold == k]) for k in range(ctx.folds.n_folds)]
        mean, std = pooled[ok].mean(axis=0), pooled[ok].std(axis=0) + 1e-6
        z = (pooled - mean) / std
        out, views = {}, {k: {} for k in range(ctx.folds.n_folds)}
        # the map on all training images, kept to score images met later (search)
        extras = {"mean": mean, "std": std, "weights": {}}
        for name in sorted(k for k in pm if k.startswith("qvec_")):
            q = np.asarray(pm[name], np.float64)

            def fit(train_rows: np.ndarray, q=q) -> np.ndarray:
                allowed = np.zeros(len(pooled), bool)
                allowed[row_image[train_rows]] = True
                use = captions[allowed[captions["image"].to_numpy()]]
                if len(use) < 2:
                    return np.zeros((z.shape[1], q.shape[1]))
                model = Ridge(alpha=float(self.params["alpha"]), fit_intercept=False)
                return model.fit(z[use["image"]], q[use["query"]]).coef_.T

            def apply(weights: np.ndarray, ids: np.ndarray, q=q) -> np.ndarray:
                mapped = normalise(z[row_image[ids]] @ weights)
                cos = np.einsum("nd,nd->n", mapped, q[query_index[ids]])
                return np.where(ok[row_image[ids]], cos, np.nan)

            values, fold_views = ctx.folds.out_of_fold(fit, apply, data.n_test)
            # a test pair whose image is a training image is scored like that image's validation rows: by the
            # map that never saw the image's own captions
            for k in range(ctx.folds.n_folds):
                ids = np.flatnonzero(np.isin(row_image[data.n_train:], fold_images[k])) + data.n_train
                if len(ids):
                    values[ids] = apply(fit(np.flatnonzero(ctx.folds.fold != k)), ids)
            extras["weights"][name] = fit(np.arange(data.n_train))
            column = f"cb_{name.removeprefix('qvec_')}_cos"
            out[column] = values.astype(np.float32)
            for k, view in fold_views.items():
                views[k][column] = view.astype(np.float32)
        return BlockOutput(dense=pd.DataFrame(out), extras=extras,
                           train_views={k: pd.DataFrame(v) for k, v in views.items()})


def bridge_cosines(extras, pooled: np.ndarray, ok: np.ndarray, query_vectors: dict[str, np.ndarray],
                   query_codes: np.ndarray, image_codes: np.ndarray) -> pd.DataFrame:
    """The block's columns for new pairs, with the map fitted on all training images (as for test rows).
    ``query_vectors`` holds unit vectors per distinct query under the pair_match extras' names (``qvec_use``...)."""
    z = (np.asarray(pooled, np.float64) - extras["mean"]) / extras["std"]
    out = {}
    for name, weights in sorted(extras["weights"].items()):
        mapped = normalise(z @ weights)
        cos = np.einsum("nd,nd->n", mapped[image_codes], query_vectors[name][query_codes])
        out[f"cb_{name.removeprefix('qvec_')}_cos"] = np.where(ok[image_codes], cos, np.nan).astype(np.float32)
    return pd.DataFrame(out)
