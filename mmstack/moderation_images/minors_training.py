"""Train the minors classifier on the Flickr8k training images, labelled by their captions; write the model file.

    python -m mmstack.moderation_images.minors_training --data ../shared/data/flickr8k \
        [--work /tmp/mmstack-bench/moderation_images] [--out mmstack/moderation_images/minors_model.npz]
        [--sizes 224 384] [--grid 2] [--crop-frac 0.6]

Labels: a training image is positive when its own caption (the query whose query_id names it), or a caption of
another image that the experts rated as describing it (mean score >= 3 of 4), mentions children
(:func:`.minors.caption_shows_minors`). Images without any caption are not used. The test part is never read.

Model: standardised EfficientNet-Lite0 pooled features (whole photo at ``--sizes``, and max / mean over a
``--grid`` of overlapping crops: :class:`.minors.FeatureRecipe`) -> L2 logistic regression. The penalty C is
picked from a small grid by out-of-fold (stratified 5-fold, seeded) false-positive rate at the target recall; the
thresholds are the out-of-fold scores that keep ``recall`` of the positives withheld, for the classifier alone and
OR-ed with the face-age check (ages from :class:`mmstack.legal.MinorFilter`, cached in the work folder).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from ..data.images import ImageLimits, decode_image, read_regular_file
from ..errors import InputError
from ..store import atomic_path
from .minors import MODEL_FILE, FeatureRecipe, ImageFeatures, MinorsModel, caption_shows_minors

log = logging.getLogger(__name__)

DEFAULT_RECIPE = FeatureRecipe((224, 384), flip=False, grid=2, crop_frac=0.6)
C_GRID = (0.0003, 0.001, 0.003)
EXPERT_MATCH = 3.0  # mean expert score (1..4) from which another image's caption counts as describing this one


def train_labels(data_dir: Path) -> pd.Series:
    """Per training image file that has a caption: does a caption describing it mention children?"""
    train = pd.read_csv(data_dir / "train_dataset.csv")
    train["source"] = train["query_id"].astype(str).str.split("#").str[0]
    captions = train.drop_duplicates("query_id")
    images = set(train["image"])
    own = captions[captions["source"].isin(images)][["source", "query_text"]].rename(columns={"source": "image"})
    described = [own]
    expert_path = data_dir / "ExpertAnnotations.tsv"
    if expert_path.is_file():
        expert = pd.read_csv(expert_path, sep="\t", header=None, names=["image", "query_id", "e1", "e2", "e3"])
        text = captions.set_index("query_id")["query_text"]
        match = expert[expert[["e1", "e2", "e3"]].mean(axis=1) >= EXPERT_MATCH]
        match = match[match["query_id"].isin(text.index)]
        described.append(pd.DataFrame({"image": match["image"], "query_text": match["query_id"].map(text)}))
    pairs = pd.concat(described, ignore_index=True)
    pairs["minor"] = pairs["query_text"].astype(str).map(caption_shows_minors)
    return pairs.groupby("image")["minor"].any().sort_index()


def read_images(folder: Path, names: list[str], limits: ImageLimits):
    """Decoded upright RGB images of ``names`` in ``folder`` (None where unreadable), one at a time."""
    for name in names:
        data = read_regular_file(str(folder / name), limits.max_bytes)
        decoded = None if isinstance(data, str) else decode_image(data, limits, exif=True)[0]
        yield name, None if decoded is None else decoded.image


def cached_features(folder: Path, names: list[str], work: Path, recipe: FeatureRecipe,
                    num_threads: int = 1, batch_size: int = 16) -> np.ndarray:
    """Classifier features of ``names`` (rows in that order), cached per image name in ``work``."""
    crops = f"_grid{recipe.grid}x{recipe.crop_frac:g}" if recipe.grid > 1 else ""
    path = work / f"features_{'_'.join(map(str, recipe.sizes))}{'_flip' if recipe.flip else ''}{crops}.npz"
    cache: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path) as z:
            cache = dict(zip(z["names"].tolist(), z["features"]))
    todo = [n for n in names if n not in cache]
    if todo:
        from tqdm.auto import tqdm

        extract = ImageFeatures(recipe.sizes, recipe.flip, num_threads, batch_size, recipe.grid, recipe.crop_frac)
        batch: list = []
        for name, image in tqdm(read_images(folder, todo, ImageLimits()), total=len(todo),
                                desc=f"minors features {folder.name}", unit="img"):
            if image is None:
                raise InputError(folder / name, "not a readable image")
            batch.append((name, image))
            if len(batch) == batch_size or name == todo[-1]:
                cache.update(zip([n for n, _ in batch], extract([im for _, im in batch]).astype(np.float32)))
                batch = []
        work.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, names=np.array(sorted(cache)), features=np.stack([cache[n] for n in sorted(cache)]))
    return np.stack([cache[n] for n in names]).astype(np.float64)


def cached_face_ages(folder: Path, names: list[str], work: Path) -> list[list[float]]:
    """Face ages per image (the legal filter's defaults: upscaled to 1000 px), cached in ``work``."""
    from ..legal import MinorFilter

    work.mkdir(parents=True, exist_ok=True)
    items = {name: (folder / name).read_bytes() for name in names}
    decisions = MinorFilter().check_many(items, cache_path=work / "face_ages.json")
    return [list(decisions[n].ages) for n in names]


def recall_threshold(scores: np.ndarray, positive: np.ndarray, recall: float,
                     already: np.ndarray | None = None) -> float:
    """The highest threshold at which at least ``recall`` of the positives score >= it (or are ``already``
    withheld by another check)."""
    already = np.zeros(len(scores), bool) if already is None else already
    need = int(np.ceil(recall * positive.sum())) - int((positive & already).sum())
    rest = np.sort(scores[positive & ~already])[::-1]
    if need <= 0 or not len(rest):
        return 1.0
    return float(rest[min(need, len(rest)) - 1])


@dataclass
class Fitted:
    model: MinorsModel
    oof: np.ndarray
    C: float
    grid: dict[float, dict[str, float]]


def _standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    return mean, np.where(scale > 1e-8, scale, 1.0)


def _logistic(X: np.ndarray, y: np.ndarray, C: float, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    mean, scale = _standardise(X)
    fitted = LogisticRegression(C=C, max_iter=5000, random_state=seed).fit((X - mean) / scale, y)
    return mean, scale, fitted.coef_[0], float(fitted.intercept_[0])


def fit_minors_model(X: np.ndarray, y: np.ndarray, recipe: FeatureRecipe,
                     face_young: np.ndarray | None = None, recall: float = 0.95, seed: int = 0,
                     grid: tuple[float, ...] = C_GRID, n_folds: int = 5) -> Fitted:
    """Pick C by out-of-fold FPR at ``recall``, fit on all rows, set both thresholds from the OOF scores."""
    y = np.asarray(y, bool)
    face_young = np.zeros(len(y), bool) if face_young is None else np.asarray(face_young, bool)
    folds = list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(X, y))

    def oof_scores(C: float) -> np.ndarray:
        out = np.zeros(len(y))
        for train, valid in folds:
            mean, scale, coef, intercept = _logistic(X[train], y[train], C, seed)
            out[valid] = 1 / (1 + np.exp(-(((X[valid] - mean) / scale) @ coef + intercept)))
        return out

    results = {}
    for C in grid:
        oof = oof_scores(C)
        th = recall_threshold(oof, y, recall, face_young)
        results[C] = {"oof": oof, "auc": float(roc_auc_score(y, oof)),
                      "fpr": float(((oof >= th) | face_young)[~y].mean())}
    best = min(grid, key=lambda c: (results[c]["fpr"], -results[c]["auc"]))
    oof = results[best]["oof"]
    mean, scale, coef, intercept = _logistic(X, y, best, seed)
    model = MinorsModel(recipe.sizes, recipe.flip, mean, scale, coef, intercept,
                        threshold=recall_threshold(oof, y, recall, face_young),
                        threshold_alone=recall_threshold(oof, y, recall), grid=recipe.grid,
                        crop_frac=recipe.crop_frac)
    summary = {c: {"oof_auc": r["auc"], "oof_fpr_with_faces": r["fpr"]} for c, r in results.items()}
    return Fitted(model, oof, best, summary)


def train_from_flickr(data_dir: Path, work: Path, recipe: FeatureRecipe = DEFAULT_RECIPE,
                      recall: float = 0.95, seed: int = 0,
                      progress: Callable[[str], None] = log.info) -> Fitted:
    """The shipped model: features and face ages of the Flickr8k training images, caption labels, fit."""
    labels = train_labels(data_dir)
    names = labels.index.tolist()
    folder = data_dir / "train_images"
    X = cached_features(folder, names, work, recipe)
    young = np.array([any(a < 25 for a in ages) for ages in cached_face_ages(folder, names, work)])
    fitted = fit_minors_model(X, labels.to_numpy(bool), recipe, young, recall, seed)
    y = labels.to_numpy(bool)
    oof = fitted.oof
    with_faces = (oof >= fitted.model.threshold) | young
    meta = {"trained_on": f"Flickr8k train_images: {len(y)} images with a caption, {int(y.sum())} positive",
            "labels": "own caption or an expert-matched caption (mean >= 3) mentions children",
            "features": recipe.describe(),
            "C": fitted.C, "target_recall": recall, "oof_auc": float(roc_auc_score(y, oof)),
            "oof_recall_with_faces": float(with_faces[y].mean()),
            "oof_fpr_with_faces": float(with_faces[~y].mean()),
            "oof_fpr_alone": float((oof >= fitted.model.threshold_alone)[~y].mean()),
            "grid": {str(c): v for c, v in fitted.grid.items()}, "seed": seed,
            "date": dt.date.today().isoformat()}
    fitted.model = MinorsModel(**{**fitted.model.__dict__, "meta": meta})
    progress(json.dumps(meta, indent=1))
    return fitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mmstack-bench/moderation_images"))
    parser.add_argument("--out", type=Path, default=MODEL_FILE)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_RECIPE.sizes))
    parser.add_argument("--flip", action="store_true")
    parser.add_argument("--grid", type=int, default=DEFAULT_RECIPE.grid, help="crops per side (0: whole photo only)")
    parser.add_argument("--crop-frac", type=float, default=DEFAULT_RECIPE.crop_frac)
    parser.add_argument("--recall", type=float, default=0.95)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    recipe = FeatureRecipe(tuple(args.sizes), args.flip, args.grid, args.crop_frac)
    recipe.check()
    fitted = train_from_flickr(args.data, args.work, recipe, args.recall)
    fitted.model.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
