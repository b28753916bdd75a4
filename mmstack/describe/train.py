"""Train the description service's models on listings of the embedded Avito generator.

    python -m mmstack.describe.train [--out mmstack/describe/models] [--rows 1200] [--seed 0] [--lots 0.4]
                                     [--image-size 224] [--net-epochs 25] [--cache FEATURES.npz]

This is the command that made the shipped models (mmstack/describe/models; defaults as above; a few minutes on
two cores). The labelled set: the generator's listings (train and test parts) with ``--lots`` of the everyday
categories drawn as multi-item listings (:mod:`mmstack.describe.listings`); 1-3 photos each. Labels: a
multi-item listing's kind is the generator's truth (a set or a lot: <VARIATIVE>; many identical items:
<SINGLE>); every other listing is labelled by the text rule (:func:`mmstack.describe.diversity.regex_label`),
which reads <SINGLE> for all of them (the generator writes no multi-item words into ordinary listings).

Writes ``listing_models.npz`` (diversity model and category matcher), ``retrieval.npz`` and ``caption_net.npz``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .best_photo import CategoryMatcher
from .captioners import NetCaptioner, RetrievalCaptioner, _save
from .diversity import SINGLE, DiversityModel, listing_features, regex_label
from .encode import Encoded, ListingEncoder, colour_stats
from .listings import GeneratedListing, embedded_listings
from .masking import mask_attributes, mask_text
from .pipeline import LISTING_MODELS, NET, RETRIEVAL, SHIPPED, listing_query

log = logging.getLogger(__name__)


def labels(listings: Sequence[GeneratedListing]) -> np.ndarray:
    """1 = <VARIATIVE>: the generator's truth for multi-item listings, the text rule for the others."""
    return np.array([l.variative if l.kind != "single" else regex_label(l.text) != SINGLE for l in listings], int)


def diversity_matrix(listings: Sequence[GeneratedListing], encs: Sequence[Encoded]) -> np.ndarray:
    return np.stack([listing_features(e, l.title) for l, e in zip(listings, encs)])


def caption_data(listings: Sequence[GeneratedListing], encs: Sequence[Encoded]):
    """Queries, masked reference descriptions and the descriptions as written, for listings with a description."""
    queries, masked, originals = [], [], []
    for l, e in zip(listings, encs):
        if not l.description:
            continue
        queries.append(listing_query(e, mask_attributes(l.attributes).text, l.variative))
        masked.append(mask_text(l.description, l.title).text)
        originals.append(l.description)
    return queries, masked, originals


def fit_matcher(listings: Sequence[GeneratedListing], encs: Sequence[Encoded], seed: int = 0) -> CategoryMatcher:
    """Category matcher on single-kind listings' photos and all texts; its threshold maximises balanced accuracy
    between true (text, own photo) pairs and pairs with a photo of another parent category, on a held-out fifth."""
    rng = np.random.default_rng(seed)
    holdout = rng.random(len(listings)) < 0.2

    def fit(rows):
        img_rows = [i for i in rows if listings[i].kind != "lot" and encs[i].n_photos]
        pooled = np.concatenate([encs[i].pooled for i in img_rows])
        colours = np.concatenate([encs[i].colours for i in img_rows])
        img_labels = np.concatenate([[listings[i].category] * encs[i].n_photos for i in img_rows])
        txt_rows = [i for i in rows if encs[i].has_text]
        return CategoryMatcher.fit(pooled, colours, img_labels, np.stack([encs[i].text_vec for i in txt_rows]),
                                   np.array([listings[i].category for i in txt_rows]), seed=seed)

    matcher = fit(np.flatnonzero(~holdout))
    held = [i for i in np.flatnonzero(holdout) if encs[i].n_photos and encs[i].has_text and listings[i].kind == "single"]
    parent = {l.category: l.attributes.get("Категория") for l in listings}
    true, false = [], []
    for i in held:
        true.append(matcher.agreement(encs[i].text_vec, encs[i].pooled[:1], encs[i].colours[:1])[0])
        others = [j for j in held if listings[j].category != listings[i].category]
        if others:
            j = others[rng.integers(len(others))]
            false.append(matcher.agreement(encs[i].text_vec, encs[j].pooled[:1], encs[j].colours[:1])[0])
    true, false = np.array(true), np.array(false)
    grid = np.linspace(0.02, 0.9, 89)
    balanced = [((true >= t).mean() + (false < t).mean()) / 2 for t in grid]
    threshold = float(grid[int(np.argmax(balanced))])
    log.info("matcher: threshold %.2f, balanced accuracy %.3f (true %d, mismatched %d held-out pairs)",
             threshold, max(balanced), len(true), len(false))
    final = fit(np.arange(len(listings)))
    final.threshold = threshold
    return final


def encode_listings(listings: Sequence[GeneratedListing], encoder: ListingEncoder,
                    cache: Path | None = None) -> list[Encoded]:
    """Features of ``listings``, kept in ``cache`` (an .npz of arrays) when given: the benchmark and a retrain
    with other model settings reuse them. The cache is trusted when its texts and photo counts match."""
    texts = [l.text for l in listings]
    counts = np.array([len(l.photos) for l in listings])
    if cache is not None and Path(cache).is_file():
        with np.load(cache, allow_pickle=False) as a:
            if list(a["texts"]) == texts and np.array_equal(a["counts"], counts):
                log.info("features: reused %s", cache)
                if "colours" in a:
                    colours = a["colours"]
                else:  # a cache from before the colour statistics: they need no network, add them
                    colours = np.stack([colour_stats(p) for l in listings for p in l.photos])
                return _split(texts, counts, a["text_vecs"], a["pooled"], a["probs"].astype(np.float32),
                              a["regions"], colours)
    encs = encoder.encode_many(texts, [l.photos for l in listings])
    if cache is not None:
        arrays = {"texts": np.array(texts), "counts": counts, "text_vecs": np.stack([e.text_vec for e in encs]),
                  "pooled": np.concatenate([e.pooled for e in encs]),
                  "probs": np.concatenate([e.probs for e in encs]).astype(np.float16),
                  "regions": np.concatenate([e.regions for e in encs]),
                  "colours": np.concatenate([e.colours for e in encs])}
        _save(Path(cache), arrays)
    return encs


def _split(texts, counts, text_vecs, pooled, probs, regions, colours) -> list[Encoded]:
    out, start = [], 0
    for text, vec, n in zip(texts, text_vecs, counts):
        part = slice(start, start + n)
        out.append(Encoded(str(text), vec, pooled[part], probs[part], regions[part], colours[part]))
        start += n
    return out


def train_all(listings: Sequence[GeneratedListing], encs: Sequence[Encoded], out: Path, seed: int = 0,
              net_epochs: int = 25, captioners: bool = True) -> dict:
    """Fit and save every model; returns a summary."""
    out = Path(out)
    t0 = time.perf_counter()
    y = labels(listings)
    diversity = DiversityModel.fit(diversity_matrix(listings, encs), y, seed=seed)
    matcher = fit_matcher(listings, encs, seed)
    arrays = {**diversity.to_arrays(), **{k: (v.astype(np.float16) if v.dtype.kind == "f" and v.ndim == 2 else v)
                                          for k, v in matcher.to_arrays().items()}}
    _save(out / LISTING_MODELS, {"kind": np.array("listing_models"), **arrays})
    queries, masked, originals = caption_data(listings, encs)
    if captioners:
        RetrievalCaptioner.fit(queries, masked, originals).save(out / RETRIEVAL)
        NetCaptioner.fit(queries, masked, epochs=net_epochs, seed=seed).save(out / NET)
    return {"listings": len(listings), "variative": int(y.sum()), "captions": len(masked),
            "matcher_threshold": matcher.threshold, "seconds": round(time.perf_counter() - t0, 1),
            "files": {p.name: p.stat().st_size for p in sorted(out.glob("*.npz"))}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmstack.describe.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=SHIPPED)
    parser.add_argument("--rows", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lots", type=float, default=0.4)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--net-epochs", type=int, default=25)
    parser.add_argument("--no-captioners", action="store_true", help="only the diversity model and the matcher")
    parser.add_argument("--cache", type=Path, default=None, help="features cache (.npz), reused when it matches")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(message)s", datefmt="%H:%M:%S")
    listings = embedded_listings(args.rows, seed=args.seed, lots=args.lots)
    encs = encode_listings(listings, ListingEncoder(args.image_size), args.cache)
    summary = train_all(listings, encs, args.out, args.seed, args.net_epochs, not args.no_captioners)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
