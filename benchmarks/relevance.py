"""Image-text relevance on the real Flickr8k developer copy: grouped CV of each model and of the stack beside the
published results, and retrieval of each test query's source image among the test images.

    python benchmarks/relevance.py [--data ../shared/data/flickr8k] [--work /tmp/mmstack-bench/relevance]
                                   [--set key=value ...]

Skips cleanly when the data is not there. Reads the data in place (never copies it). Scores are against the
expert target (the mean of three 1..4 scores mapped to 0..1), grouped 5-fold CV by image, the stack's score nested.
Retrieval ranks, for each of the 500 test queries, the 100 test images by the stack's prediction (and by the
zero-shot label bridge alone) and counts how often the query's source image is first or in the top 5.
Results go to BENCHMARKS.md (section "relevance").
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import publish  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = [("ResNet50 + all-MiniLM-L6-v2 + MLP", "0.0476", "", "", "", "", ""),
             ("CLIP ViT zero-shot", "0.0563", "", "", "", "", ""),
             ("ResNet50 + DistilBERT + MLP", "0.0531 (RMSE squared)", "0.2304", "0.158", "0.359", "", "")]


def retrieval(test: pd.DataFrame, score: np.ndarray) -> tuple[float, float, int]:
    """Share of queries whose source image (named by the query_id) is ranked first / in the top 5."""
    frame = test.assign(score=score, source=test["query_id"].str.split("#").str[0])
    frame = frame[frame.groupby("query_id")["image"].transform(lambda s: s.isin(frame["source"]).any())]
    frame["rank"] = frame.groupby("query_id")["score"].rank(ascending=False, method="first")
    own = frame[frame["image"] == frame["source"]]
    return float((own["rank"] <= 1).mean()), float((own["rank"] <= 5).mean()), len(own)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "flickr8k")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mmstack-bench/relevance"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--no-record", action="store_true", help="print only (for experiments)")
    parser.add_argument("--no-search", action="store_true", help="skip the search part (for experiments)")
    args = parser.parse_args()
    if not (args.data / "train_dataset.csv").is_file():
        print(f"skipped: no Flickr8k data at {args.data}")
        return
    from mmstack.config import Config
    from mmstack.metrics import score_all
    from mmstack.pipeline import Timer, build_features, prepare, stack_target, train_models
    from mmstack.store import Store

    cfg = Config.load(ROOT / "configs" / "relevance.toml", args.overrides)
    store = Store(args.work)
    start = time.perf_counter()
    spec, data, targets = prepare(cfg, args.data, store, Timer())
    target = targets[0]
    cache = build_features(cfg, data, store, targets)[target.target.name]
    results = train_models(cfg, spec, target, store, cache)
    stacked = stack_target(cfg, spec, target, results, store)
    stack, stack_oof, stack_test = stacked.summary, stacked.oof[:, 0], stacked.test[:, 0]
    seconds = time.perf_counter() - start
    expert = data.labels["expert"].to_numpy(float)[target.rows]
    rows = []
    for r in results:
        rows.append((r.model, score_all(expert, np.clip(r.oof[:, 0], 0, 1)), r.seconds))
    rows.append((f"stack ({stack['method']}, nested)", score_all(expert, np.clip(stack_oof, 0, 1)), None))
    bridge = cache.outputs["pair_match"].dense["pm_use_cos_bridge_all"].to_numpy(float)
    bridge_spearman = score_all(expert, bridge[:data.n_train], ("spearman",))["spearman"]
    top1, top5, n_queries = retrieval(data.test, stack_test)
    zs1, zs5, _ = retrieval(data.test, bridge[data.n_train:])
    # the search command itself, legal filter on: every test query against the test image folder
    from mmstack.search import search_many

    queries = pd.read_csv(args.data / "test_queries.csv", sep="|", index_col=0)
    if args.no_search:
        queries = queries.iloc[:0]
    start = time.perf_counter()
    found = [] if args.no_search else search_many(cfg, queries["query_text"].tolist(), args.data / "test_images", top=5, input_dir=args.data,
                        workdir=args.work)
    search_seconds = time.perf_counter() - start
    answered = [r for r in found if r.notice is None]
    # for each answered query: the images returned (top 5) and the image the query was written for
    returned = [r.ranked["image"].tolist() for r in answered]
    sources = [src for r, src in zip(found, queries["image"]) if r.notice is None]
    hits1 = np.mean([src in top[:1] for top, src in zip(returned, sources)]) if answered else np.nan
    hits5 = np.mean([src in top for top, src in zip(returned, sources)]) if answered else np.nan
    withheld = answered[0].withheld if answered else 0
    # the legal filter against the test captions (used here to judge only): an image shows children when any
    # caption written for it asks for minors
    from mmstack.legal import query_asks_for_minors

    truth = queries.groupby("image")["query_text"].agg(lambda t: any(query_asks_for_minors(x) for x in t))
    reasons = answered[0].withheld_images if answered else {}
    by_face = {f for f, r in reasons.items() if "face estimated" in r}
    by_any = set(reasons)
    kids, others = set(truth.index[truth]), set(truth.index[~truth])
    filter_lines = ["", "Legal filter on the 100 test images, judged by their own captions (not seen by the filter): "
                    f"{len(kids)} images have a caption that mentions children.", "",
                    "| withheld by | children images withheld (recall) | other images withheld |", "|---|---:|---:|",
                    *(f"| {name} | {len(kids & got)}/{len(kids)} ({len(kids & got) / max(1, len(kids)):.0%}) | "
                      f"{len(others & got)}/{len(others)} |"
                      for name, got in (("faces estimated under 25", by_face),
                                        ("minors classifier or faces (mmstack.moderation_images)", by_any)))]
    lines = ["## Image-text relevance (Flickr8k)", "",
             f"`python benchmarks/relevance.py`: the real Flickr8k developer copy ({data.n_train:,} scored pairs, "
             f"{data.train['image'].nunique()} images, {data.train['query_id'].nunique()} queries), configs/relevance.toml "
             f"as shipped{' with ' + ', '.join(args.overrides) if args.overrides else ''}, 5-fold CV grouped by image "
             f"(no validation image is seen in training). Scores against the expert target (mean of three 1..4 "
             f"scores mapped to 0..1); the stack's are nested CV. {seconds:.0f} s for the whole run here "
             "(features and models reused when cached).", "",
             "| model | MSE | RMSE | MAE | R2 | Spearman | fit seconds |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s, secs in rows:
        lines.append(f"| {name} | {s['mse']:.4f} | {s['rmse']:.4f} | {s['mae']:.4f} | {s['r2']:.3f} | "
                     f"{s['spearman']:.3f} | {'' if secs is None else f'{secs:.0f}'} |")
    lines.append(f"| zero-shot label bridge alone (cosine, not a regressor) | | | | | {bridge_spearman:.3f} | |")
    for name, *vals in PUBLISHED:
        lines.append(f"| published: {name} | {' | '.join(vals)} |")
    lines += ["", "The issue's goal is a stacked MSE of at most 0.036; the published results are the floor.", "",
              f"Search on the test part: each of {n_queries} test queries ranks the {data.test['image'].nunique()} "
              "test images; how often its own source image comes first or in the top 5.", "",
              "| ranking by | top 1 | top 5 |", "|---|---:|---:|",
              f"| stack prediction | {top1:.3f} | {top5:.3f} |",
              f"| zero-shot label bridge alone | {zs1:.3f} | {zs5:.3f} |",
              f"| chance | {1 / data.test['image'].nunique():.3f} | {5 / data.test['image'].nunique():.3f} |",
              f"| `mmstack search`, legal filter on ({len(answered)} queries answered) | {hits1:.3f} | {hits5:.3f} |",
              "", f"`mmstack search` (`search_many`) answered {len(answered)} of {len(found)} test queries in "
              f"{search_seconds:.0f} s; {len(found) - len(answered)} asked for children and got the notice instead "
              f"of results; the legal filter withheld {withheld} of the 100 test images, "
              "which can therefore never be returned, even when they are the query's own image.", *filter_lines]
    text = "\n".join(lines)
    publish("relevance", text, record=not args.no_record)


if __name__ == "__main__":
    main()
