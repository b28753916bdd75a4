"""Time every feature block on generated Avito data; peak memory per block; cost at the full Avito size.

    python benchmarks/features.py [--rows 100000] [--image-rows 2000]

Each block runs in its own process (its dependencies are built first and not timed). Peak memory is that
process's peak RSS above its RSS after loading the data, next to the size of the loaded tables ("input"), so
"no block holds more than two copies of its input" can be read off the table. Results go to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import write_section  # noqa: E402

FULL_ROWS = 2_011_862  # Kaggle train + test
TEXT_BLOCKS = ["basic", "text_stats", "text_tfidf", "text_embed", "tabular", "target_encoding", "graph"]
IMAGE_BLOCKS = ["image_stats", "image_embed"]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(block: str, data_dir: str, work: str) -> None:
    from mmstack.config import Config
    from mmstack.data import avito
    from mmstack.features.base import BlockCache
    from mmstack.features.registry import make_block
    from mmstack.folds import target_data
    from mmstack.store import Store

    store = Store(work)
    data = avito.load(data_dir, store)
    input_mb = (data.train.memory_usage(deep=True).sum() + data.test.memory_usage(deep=True).sum()
                + sum(f.memory_usage(deep=True).sum() for f in data.extras.values())) / 2**20
    cfg = Config.load(Path(__file__).resolve().parents[1] / "configs" / "avito.toml")
    made = {}

    def resolve(name):
        return made.setdefault(name, make_block(name, cfg.block_params(name)))

    cache = BlockCache(data, store, seed=42, target=target_data(store, data, data.target()))
    for dep in resolve(block).depends_on:
        cache.get(resolve(dep), resolve)
    base = rss_mb()
    start = time.perf_counter()
    out = cache.get(resolve(block), resolve)
    seconds = time.perf_counter() - start
    cols = (0 if out.dense is None else out.dense.shape[1]) + (0 if out.sparse is None else out.sparse.shape[1])
    print(json.dumps({"block": block, "rows": data.n_train + data.n_test, "seconds": seconds, "cols": cols,
                      "peak_extra_mb": rss_mb() - base, "input_mb": input_mb, "reused": cache.reused[block]}))


def ensure_data(path: Path, rows: int, images: bool) -> None:
    if (path / "train.csv").exists():
        return
    from mmstack.data.avito_synth import write_avito

    write_avito(path, rows=rows, seed=123, images=images)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--image-rows", type=int, default=2_000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/mmstack-bench"))
    parser.add_argument("--child", nargs=3, metavar=("BLOCK", "DATA", "WORK"))
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    text_dir, image_dir = args.data / f"avito-{args.rows}", args.data / f"avito-img-{args.image_rows}"
    ensure_data(text_dir, args.rows, images=False)
    ensure_data(image_dir, args.image_rows, images=True)
    results = []
    for blocks, data_dir in ((TEXT_BLOCKS, text_dir), (IMAGE_BLOCKS, image_dir)):
        for block in blocks:
            work = args.data / f"work-{block}-{data_dir.name}"
            subprocess.run(["rm", "-rf", str(work)], check=True)
            proc = subprocess.run([sys.executable, __file__, "--child", block, str(data_dir), str(work)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"block {block} failed")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["rows_per_s"] = r["rows"] / r["seconds"]
            r["full_minutes"] = FULL_ROWS / r["rows_per_s"] / 60
            results.append(r)
            print(f"{block:16s} {r['rows']:7d} rows {r['seconds']:8.1f}s {r['rows_per_s']:9.0f} rows/s "
                  f"peak +{r['peak_extra_mb']:7.0f} MB (input {r['input_mb']:.0f} MB) "
                  f"full Avito ~{r['full_minutes']:.0f} min", flush=True)
    lines = ["## Feature blocks", "",
             f"`python benchmarks/features.py --rows {args.rows} --image-rows {args.image_rows}`: each block alone in "
             "a fresh process on generated data (text and tabular blocks on the big set, image blocks on the small "
             "one with images). Peak memory is how far the block pushed the process's peak RSS above the peak it had "
             "after loading the data (and building the block's dependencies): a lower bound, and 0 where the block "
             "stayed under that earlier peak. 'Input' is the size of the loaded tables. Full-size cost extrapolates rows/s linearly to the Kaggle "
             f"train + test ({FULL_ROWS:,} rows; images: one per row).", "",
             "| block | rows | seconds | rows/s | columns | peak extra MB | input MB | extra / input | full Avito (min) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['block']} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | {r['cols']:,} | "
                     f"{r['peak_extra_mb']:.0f} | {r['input_mb']:.0f} | {r['peak_extra_mb'] / r['input_mb']:.2f} | "
                     f"{r['full_minutes']:.0f} |")
    total = sum(r["full_minutes"] for r in results)
    lines += ["", f"Sum at full size: about {total:.0f} minutes on this machine, one block after another. "
                  "The graph block's k-NN uses faiss (HNSW above 50k rows, about n log n; benchmarks/scale.py "
                  "fits the growth)."]
    write_section("features", "\n".join(lines))


if __name__ == "__main__":
    main()
