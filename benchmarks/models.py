"""Fit each level-1 family on generated Avito rows with the feature blocks; CV, fit seconds, peak memory.

    python benchmarks/models.py [--rows 100000] [--blocks ...]

Features are built once into a shared work folder (the store reuses them); each model then trains alone in a
fresh process so that its peak RSS is its own. The image blocks are left out by default: drawing and embedding
100k images would dominate the run and the issue's question is the models' cost (features.py times those).
Results go to BENCHMARKS.md.
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

MODELS = ["lgb", "cat", "xgb", "ridge", "mlp"]
BLOCKS = ["basic", "text_stats", "text_tfidf", "text_embed", "tabular", "target_encoding", "graph"]


def bench_config(overrides: list[str]):
    """configs/avito.toml with the benchmark's overrides."""
    from mmstack.config import Config

    return Config.load(Path(__file__).resolve().parents[1] / "configs" / "avito.toml", overrides)


def block_overrides(blocks: str) -> list[str]:
    return [f"features.blocks={json.dumps(blocks.split(','))}", "features.graph.edges=['user', 'title', 'knn']"]


def child(model: str, data_dir: str, work: str, overrides: str) -> None:
    from mmstack.pipeline import train_only

    cfg = bench_config(json.loads(overrides))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    result = train_only(cfg, [model], Path(data_dir), work)[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"model": model, "cv": result.cv, "folds": result.fold_scores, "fit_seconds": result.seconds,
                      "wall_seconds": time.perf_counter() - start, "peak_mb": peak, "base_mb": base,
                      "reused": result.reused, "params": result.params}))


def fit_in_child(model: str, data_dir: Path, work: Path, overrides: list[str]) -> dict:
    """Train (or reuse) one model in a fresh process, so that its peak RSS is its own; its result as a dict."""
    proc = subprocess.run([sys.executable, __file__, "--child", model, str(data_dir), str(work),
                           json.dumps(overrides)], capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"model {model} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/mmstack-bench"))
    parser.add_argument("--blocks", default=",".join(BLOCKS))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--child", nargs=4)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    data_dir = args.data / f"avito-{args.rows}"
    if not (data_dir / "train.csv").exists():
        from mmstack.data.avito_synth import write_avito

        write_avito(data_dir, rows=args.rows, seed=123, images=False)
    work = args.data / f"work-models-{args.rows}"
    from mmstack.pipeline import features_only

    overrides = block_overrides(args.blocks)
    cfg = bench_config(overrides)
    start = time.perf_counter()
    features_only(cfg, data_dir, work)
    feature_seconds = time.perf_counter() - start
    results = []
    for model in args.models.split(","):
        r = fit_in_child(model, data_dir, work, overrides)
        results.append(r)
        print(f"{model:6s} cv {r['cv']:.5f}  fit {r['fit_seconds']:7.1f}s  peak RSS {r['peak_mb']:6.0f} MB"
              f"{'  (reused)' if r['reused'] else ''}", flush=True)
    best = min(results, key=lambda r: r["cv"])
    lines = ["## Level-1 models", "",
             f"`python benchmarks/models.py --rows {args.rows}`: {args.rows:,} generated training rows "
             f"({round(args.rows * 0.338):,} test rows), 5-fold CV, default params of configs/avito.toml, blocks "
             f"{', '.join(args.blocks.split(','))} (graph without image edges). Features built once in "
             f"{feature_seconds:.0f} s; each model then in its own process. Peak RSS includes the loaded features.",
             "", "| model | CV RMSE | fold spread (std) | fit seconds (5 folds) | peak RSS MB | CV vs best |",
             "|---|---:|---:|---:|---:|---:|"]
    import numpy as np

    for r in results:
        lines.append(f"| {r['model']} | {r['cv']:.5f} | {np.std(r['folds']):.5f} | {r['fit_seconds']:.1f} | "
                     f"{r['peak_mb']:.0f} | {r['cv'] / best['cv']:.3f} |")
    write_section("models", "\n".join(lines))


if __name__ == "__main__":
    main()
