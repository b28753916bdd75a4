"""Search a folder of images by a text query with the trained relevance models; images of minors never returned.

``mmstack search CONFIG "query" --images DIR --top K``:

1. the relevance models of CONFIG are trained, or reused from the work folder (``mmstack run`` trains them);
2. each image of DIR is embedded once (EfficientNet-Lite0 features and class probabilities, cached per image
   content hash under ``features/search_images/``), and checked by the legal filter (decisions cached per content
   hash in ``features/legal/decisions.json``);
3. the query is paired with every image; the pair_match features are computed as in training (the block's stored
   image PCA), every level-1 fold model predicts, fold predictions are averaged, and the chosen blender (refitted
   on all out-of-fold predictions) blends them;
4. images the legal filter withholds are dropped before ranking (:class:`mmstack.moderation_images.minors.ChildFilter`:
   the minors classifier's probability at or above ``search.minor_threshold``, default the model file's, or a face
   estimated under ``--age-threshold``; classifier scores cached per content hash in
   ``features/legal/minors_scores.json``); a query that asks for children gets a notice and no
   results. The top K are printed and drawn on a contact sheet (PNG).

Only readable images are candidates: files that are not regular files inside the folder, over the byte or pixel
limits (``[data]`` ``max_image_bytes``, ``max_image_pixels``) or not decodable are counted apart (``unreadable``)
and play no part in any score. A pair's features depend on its query and image only (``pair_match`` compares a
query's scores with a fixed reference set of training images, not with the folder), so an image scores the same
alone, among five or among a hundred.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from .config import Config
from .data.images import ImageLimits, ImageSource, decode_image
from .errors import ConfigError, InputError
from .legal import MinorFilter, content_hash, query_asks_for_minors
from .moderation_images.minors import ChildFilter
from .store import Store, make_key, write_joblib

log = logging.getLogger(__name__)

NOTICE_MINORS = ("This search asks for images of children. Images of minors are never returned, so there are no "
                 "results for it.")
MAX_QUERY_DISPLAY = 80  # characters of a query shown in titles; the whole query is scored


@dataclass
class SearchResult:
    query: str
    ranked: pd.DataFrame  # image (file name), score; returned images only, best first, at most top K
    n_images: int
    withheld: int
    notice: str | None = None
    sheet: Path | None = None
    withheld_images: dict[str, str] = field(default_factory=dict)  # file name -> why
    unreadable: int = 0  # files in the folder that are not readable images: never candidates, never withheld
    unreadable_images: dict[str, str] = field(default_factory=dict)  # file name -> why


def shown_query(query: str, limit: int = MAX_QUERY_DISPLAY) -> str:
    """The query as titles show it: on one line, cut to ``limit`` characters."""
    line = " ".join(query.split())
    return line if len(line) <= limit else line[:limit - 1] + "\u2026"


def check_query(query: str) -> None:
    if not query.strip():
        raise ConfigError("search: the query is empty; say what to look for, e.g. \"a dog runs on the beach\"")


def folder_images(folder: Path, limits: ImageLimits | None = None) -> ImageSource:
    """The regular .jpg files inside ``folder`` (symlinks out of it, devices and FIFOs are skipped, counted)."""
    if not Path(folder).is_dir():
        raise InputError(folder, "image folder not found")
    source = ImageSource(Path(folder), limits or ImageLimits())
    if not len(source):
        raise InputError(folder, "no .jpg images in the folder")
    return source


def image_vectors(payloads: list[bytes], params: dict, store: Store, limits: ImageLimits | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None]]:
    """Pooled features, class probabilities, a readable flag and why not readable per image, cached per content
    hash (and limits)."""
    from .features.image_embed import model_identity
    from .features.pair_match import embed_images

    limits = limits or ImageLimits()
    folder = store.dir("features") / "search_images" / make_key(params["image_size"], model_identity(),
                                                                None if limits == ImageLimits() else limits.__dict__)
    hashes = [content_hash(b) for b in payloads]
    cached = {h: joblib.load(folder / f"{h}.joblib") for h in set(hashes) if (folder / f"{h}.joblib").is_file()}
    todo = sorted(set(hashes) - set(cached))
    if todo:
        first = {h: b for h, b in zip(hashes, payloads)}
        pooled, probs, ok, reasons = embed_images([first[h] for h in todo], params["image_size"],
                                                  params["batch_size"], params["num_threads"],
                                                  desc="search: images", limits=limits)
        for j, h in enumerate(todo):
            # float32, as the block computes them
            cached[h] = {"pooled": pooled[j], "probs": probs[j], "ok": ok[j], "reason": reasons[j]}
            write_joblib(folder / f"{h}.joblib", cached[h])
    log.info("search: %d images, %d embedded now, %d from the cache", len(payloads), len(todo),
             len(payloads) - len(todo))
    return (np.stack([cached[h]["pooled"] for h in hashes]).astype(np.float32),
            np.stack([cached[h]["probs"] for h in hashes]).astype(np.float32),
            np.array([bool(cached[h]["ok"]) for h in hashes]),
            [cached[h].get("reason") for h in hashes])


def score_images(config: Config, queries: list[str], pooled: np.ndarray, probs: np.ndarray, ok: np.ndarray,
                 input_dir: Path | None, workdir: Path) -> np.ndarray:
    """The stacked relevance (n_queries, n_images) of each query to each image, from the models trained (or
    reused) for ``config``."""
    from .features.pair_match import label_vectors, pair_frame
    from .projection import unit_rows
    from .features.registry import make_block
    from .features.text_embed import embed_texts, make_encoder
    from .models.base import ModelInput, load_fold
    from .pipeline import Timer, build_features, prepare, resolve_input, stack_target, train_models

    if config.blocks[:1] != ["pair_match"] or set(config.blocks) - {"pair_match", "caption_bridge"}:
        raise ConfigError("search scores pairs with the pair_match block first and, optionally, caption_bridge: "
                          f"got [features] blocks = {config.blocks}")
    store = Store(workdir)
    spec, data, targets = prepare(config, resolve_input(config, input_dir), store, Timer())
    target = targets[0]
    cache = build_features(config, data, store, targets)[target.target.name]
    results = train_models(config, spec, target, store, cache)
    stacked = stack_target(config, spec, target, results, store)
    params = make_block("pair_match", config.block_params("pair_match")).params
    n, nq = len(pooled), len(queries)
    vectors, labels = {}, {}
    for name in params["encoders"]:
        encoder = make_encoder(name, num_threads=params["num_threads"] or None)
        labels[name] = label_vectors(encoder, params["template"])
        vectors[name] = unit_rows(embed_texts(encoder, queries).astype(np.float64))
    image_pca = cache.outputs["pair_match"].extras["image_pca"]
    query_codes, image_codes = np.repeat(np.arange(nq), n), np.tile(np.arange(n), nq)  # every query x every image
    frame = pair_frame(query_codes, vectors, image_codes, pooled, probs, ok, labels, params, image_pca,
                       cache.outputs["pair_match"].extras["reference_probs"])
    if "caption_bridge" in config.blocks:  # columns in the config's block order, as the models saw them
        from .features.caption_bridge import bridge_cosines

        neighbours = make_block("caption_bridge", config.block_params("caption_bridge")).params["neighbours"]
        bridge = bridge_cosines(cache.outputs["caption_bridge"].extras, pooled, ok,
                                {f"qvec_{k}": v for k, v in vectors.items()}, query_codes, image_codes, neighbours)
        frame = pd.concat([frame, bridge], axis=1)
    extras = {"pair_match": {"image_index": image_codes, "query_index": query_codes,
                             "image_pooled": pooled, "image_probs": probs, "image_ok": ok,
                             **{f"qvec_{k}": v.astype(np.float32) for k, v in vectors.items()}}}
    new_pairs = ModelInput(X=frame, categorical=[], block_keys={}, n_train=0, extras=extras)
    preds = []
    for r in results:
        # the saved fold models, as the fold loop made the test predictions: finished per fold, then averaged
        fold_preds = []
        for k in range(target.folds.n_folds):
            model, fitted = load_fold(store, spec.name, r.name, k)
            model.bind(new_pairs)
            fold_preds.append(target.target.finish(model.predict_fitted(fitted, frame)))
        preds.append(target.target.finish(np.mean(fold_preds, axis=0)))
    blended = stacked.blend(np.stack(preds, axis=1))  # the saved blender, never refitted here
    return blended[:, 0].reshape(nq, n)


def search(config: Config, query: str, images: Path, top: int = 5, input_dir: Path | None = None,
           workdir: Path = Path("."), sheet: Path | None = None, age_threshold: float | None = None,
           minor_filter: MinorFilter | None = None, child_filter: ChildFilter | None = None) -> SearchResult:
    """Rank the images of ``images`` for ``query`` (see the module docstring)."""
    return search_many(config, [query], images, top, input_dir, workdir, [sheet], age_threshold, minor_filter,
                       child_filter)[0]


def legal_filter(config: Config, age_threshold: float | None = None, minor_filter: MinorFilter | None = None,
                 limits: ImageLimits | None = None) -> ChildFilter:
    """The search's legal filter: the minors classifier (threshold ``search.minor_threshold``, default the model
    file's) OR the face-age check (``minor_filter``, default :class:`MinorFilter` at ``age_threshold``)."""
    faces = minor_filter or MinorFilter(**({} if age_threshold is None else {"age_threshold": age_threshold}))
    return ChildFilter(threshold=config.get("search.minor_threshold"), face_filter=faces, limits=limits)


def search_many(config: Config, queries: list[str], images: Path, top: int = 5, input_dir: Path | None = None,
                workdir: Path = Path("."), sheets: list[Path | None] | None = None,
                age_threshold: float | None = None, minor_filter: MinorFilter | None = None,
                child_filter: ChildFilter | None = None) -> list[SearchResult]:
    """:func:`search` for several queries over one folder: the images are embedded and checked once.

    A query that asks for children gets the notice before any image is read (its ``n_images`` counts the files)."""
    if top < 1:
        raise ConfigError(f"--top must be at least 1, got {top}")
    for query in queries:
        check_query(query)
    limits = ImageLimits.from_options(config.get("data"))
    source = folder_images(images, limits)
    names = source.ids()
    files = [source.file_name(name) for name in names]
    # only readable images are candidates: the rest are counted apart and never reach the filter or the models
    unreadable = source.skipped()
    asks_minors = [query_asks_for_minors(q) for q in queries]
    results: list[SearchResult | None] = [
        SearchResult(q, pd.DataFrame(columns=["image", "score"]), len(names), 0, NOTICE_MINORS) if minors else None
        for q, minors in zip(queries, asks_minors)]
    todo = [i for i, r in enumerate(results) if r is None]
    if not todo:
        return results
    store = Store(workdir)
    from .features.registry import make_block

    params = make_block("pair_match", config.block_params("pair_match")).params
    payloads = []
    for file, name in zip(files, names):
        data, reason = source.read(name)
        payloads.append(data)
        if data is None:
            unreadable[file] = reason
    present = [i for i, data in enumerate(payloads) if data is not None]
    if not present:
        raise InputError(images, f"none of the {len(unreadable)} .jpg files in the folder is a readable image")
    pooled, probs, ok, reasons = image_vectors([payloads[i] for i in present], params, store, limits)
    for j, i in enumerate(present):
        if not ok[j]:
            unreadable[files[i]] = reasons[j] or "unreadable"
    keep = [i for j, i in enumerate(present) if ok[j]]
    pooled, probs, ok = pooled[ok], probs[ok], ok[ok]
    files, payloads = [files[i] for i in keep], [payloads[i] for i in keep]
    if unreadable:
        log.warning("search: %d file(s) in %s are not readable images and are not candidates: %s", len(unreadable),
                    images, ", ".join(f"{n} {why}" for why, n in sorted(Counter(unreadable.values()).items())))
    if not files:
        raise InputError(images, f"none of the {len(unreadable)} .jpg files in the folder is a readable image")
    child_filter = child_filter or legal_filter(config, age_threshold, minor_filter, limits)
    decisions = child_filter.check_many(dict(zip(files, payloads)),
                                        cache_path=store.dir("features") / "legal" / "minors_scores.json")
    withheld = np.array([decisions[f].withheld for f in files])
    scores = score_images(config, [queries[i] for i in todo], pooled, probs, ok, input_dir, workdir)
    log.info("legal filter: %d of %d image(s) withheld (minors classifier or a face estimated under age)",
             withheld.sum(), len(files))
    reasons_withheld = {f: decisions[f].reason for f, w in zip(files, withheld) if w}
    by_file = dict(zip(files, payloads))
    for row, i in enumerate(todo):
        ranked = (pd.DataFrame({"image": files, "score": scores[row]})[~withheld]
                  .sort_values("score", ascending=False, kind="stable").head(top).reset_index(drop=True))
        results[i] = SearchResult(queries[i], ranked, len(files), int(withheld.sum()),
                                  withheld_images=reasons_withheld, unreadable=len(unreadable),
                                  unreadable_images=dict(unreadable))
        sheet = sheets[i] if sheets else None
        if sheet is not None and len(ranked):
            results[i].sheet = contact_sheet(ranked, by_file, queries[i], sheet, limits)
    return results


def contact_sheet(ranked: pd.DataFrame, payloads: dict[str, bytes], query: str, path: Path,
                  limits: ImageLimits | None = None) -> Path:
    """A PNG grid of the ranked images with their scores (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .store import atomic_path

    cols = min(5, len(ranked))
    rows = -(-len(ranked) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.9 * rows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (image, score) in enumerate(zip(ranked["image"], ranked["score"])):
        ax = axes.ravel()[i]
        ax.imshow(decode_image(payloads[image], limits or ImageLimits(), draft=256, max_side=512)[0].image)
        ax.set_title(f"{i + 1}. {score:.3f}\n{image}", fontsize=8)
    fig.suptitle(f"\u201c{shown_query(query)}\u201d", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return path
