"""How the Avito pipeline grows with the data: seconds, peak memory and output size per step at several sizes,
a fitted growth exponent per step, and an extrapolation to the full competition (1.5M train + 0.5M test rows).

    python benchmarks/scale.py --rows 25000 50000 100000 [--set models.lgb.max_rounds=300 ...] [--record]

``make-data avito --no-images`` runs in its own process under ``/usr/bin/time``; then one process per size loads
the data, builds each feature block of configs/avito-full.toml without images (in the blocks' own process, as
``features.own_process`` says) and trains each model in the config's order, as a run does, recording each
step's seconds and peak RSS (what has to fit in a Kaggle session). Blocks and models run with the config's params except the ``--set`` overrides (recorded with the table). The exponent b of ``seconds ~ rows^b`` is fitted on the measured points; full-size seconds are
``seconds(largest) * (full / largest)^max(b, 1)``; peak memory is extrapolated linearly (``a + c * rows``) from
the points. The group statistics of the ``tabular`` block are also timed in pandas and polars side by side.

Each step is written to ``--results`` as soon as it is measured. A long size (500k takes hours) can be split over
several sittings: stop it, then rerun the same command with ``--keep-work``; the size's store is kept, the blocks
already built are reused (their steps were measured the first time) and only the missing steps run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import publish  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "avito-full.toml"
FULL_TRAIN, FULL_TEST = 1_503_424, 508_438  # Kaggle train.csv / test.csv rows
FULL_ROWS = FULL_TRAIN + FULL_TEST
BLOCKS = ["basic", "text_stats", "text_tfidf", "text_embed", "tabular", "target_encoding", "graph"]
# the models of avito-full.toml in its order (a run trains them one after another), without the image-text net
MODELS = [m for m in tomllib.loads(CONFIG.read_text())["models"]["train"] if m != "xattn"]
# without images: the image edges of the graph and the image blocks are left out
NO_IMAGES = ['features.graph.edges=["user","title","knn"]']
# models (and torch) use every core they are given; the blocks are single-threaded numpy/sklearn/polars
THREADED = set(MODELS) | {"text_embed"}


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, str, float]:
    """Run ``cmd`` under /usr/bin/time: (wall seconds, peak RSS MB, stdout+stderr, CPU seconds)."""
    stats = Path(os.environ.get("TMPDIR", "/tmp")) / f"mmstack-scale-time-{os.getpid()}.txt"
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "-o", str(stats), *cmd], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    user, system, peak_kb = map(float, stats.read_text().split()[-3:])
    return seconds, peak_kb / 1024, proc.stdout + proc.stderr, user + system


def folder_mb(*paths: Path) -> float:
    total = 0
    for path in paths:
        files = [path] if path.is_file() else path.rglob("*") if path.exists() else []
        total += sum(f.stat().st_size for f in files if f.is_file())
    return total / 2**20


def closure(name: str, params) -> list[str]:
    """``name`` after every block it depends on (transitively), in build order."""
    from mmstack.features.registry import make_block

    order: list[str] = []

    def visit(n: str) -> None:
        for dep in make_block(n, params(n)).depends_on:
            visit(dep)
        if n not in order:
            order.append(n)

    visit(name)
    return order


def mmstack(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmstack", *args]


def measure_size(rows: int, data_root: Path, sets: list[str], models: list[str], blocks: list[str],
                 done: set[str] = frozenset(), keep_work: bool = False):
    """make-data in its own process, then every block and model of one size in one child process; yields each
    step as it is measured. With ``keep_work`` the size's store is kept from an earlier invocation: its blocks are
    reused (their steps were measured then, and are not measured again), and only steps not in ``done`` run."""
    data, work = data_root / f"avito-{rows}", data_root / f"work-{rows}"
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    if not (data / "train.csv").exists():
        secs, peak, _, cpu = timed(mmstack("make-data", "avito", "--rows", str(rows), "--seed", "123", "--no-images",
                                           "--out", str(data)))
        yield {"step": "make-data", "kind": "data", "rows": rows, "seconds": secs, "cpu_seconds": cpu,
               "peak_mb": peak, "out_mb": folder_mb(data)}
    result = work.with_suffix(".steps.jsonl")
    result.unlink(missing_ok=True)
    todo = [m for m in models if m not in done]
    if todo or any(b not in done for b in blocks):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(data), str(work), str(result),
               "--models", *todo, "--blocks", *blocks, *[a for s in sets for a in ("--set", s)]]
        failure = None
        try:
            _, peak, _, _ = timed(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)})
        except (RuntimeError, KeyboardInterrupt) as exc:  # the steps the child finished still count
            peak, failure = float("nan"), exc
        steps = [json.loads(line) for line in result.read_text().splitlines()] if result.exists() else []
        for step in steps:
            if not step.get("reused") and step["step"] not in done:
                yield {**step, "process_peak_mb": peak}
        if failure is not None:
            raise failure
    if not any(step.startswith("group ") for step in done):
        yield from group_statistics(data, rows)


def _mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MB (RssAnon: its heap, not the libraries'
    file pages that a child process shares)."""
    with open("/proc/self/status") as fh:
        return int(fh.read().split(f"{field}:")[1].split()[0]) / 1024


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the blocks' process)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _record(result: Path, step: dict) -> None:
    """One step, written (a JSON line, flushed) as soon as it is measured: a stopped run keeps its steps."""
    with open(result, "a") as fh:
        fh.write(json.dumps(step) + "\n")
    print(json.dumps(step), flush=True)


def _config(sets: list[str], models: list[str], blocks: list[str]):
    from mmstack.config import Config

    return Config.load(CONFIG, NO_IMAGES + sets + [f"features.blocks={json.dumps(blocks)}",
                                                   f"models.train={json.dumps(models)}"])


def measure_blocks(cfg, dataset, target, store, work: Path, result: Path, parent_mb: float = 0.0):
    """Build each block (dependencies first, in config order), one measured step each; returns the cache.
    ``parent_mb``: what the run's process holds meanwhile when this runs in the blocks' own process."""
    from mmstack.features.base import BlockCache
    from mmstack.features.registry import make_block
    from mmstack.own_process import peak_rss_mb, reset_peak_rss

    made: dict = {}

    def resolve(name):
        return made.setdefault(name, make_block(name, cfg.block_params(name)))

    cache = BlockCache(dataset, store, cfg.seed, hold=cfg.get("features.hold_in_memory", True)).for_target(target)
    for block in cfg.blocks:
        reset_peak_rss()
        start, cpu = time.perf_counter(), _cpu_seconds()
        cache.get(resolve(block), resolve)
        _record(result, {"step": block, "kind": "block", "rows": dataset.n_train,
                         "seconds": time.perf_counter() - start, "cpu_seconds": _cpu_seconds() - cpu,
                         "peak_mb": parent_mb + peak_rss_mb(), "out_mb": folder_mb(work / "features" / block),
                         "reused": cache.reused[block], **({"parent_mb": parent_mb} if parent_mb else {})})
    return cache


def blocks_elsewhere(data: Path, work: Path, result: Path, sets: list[str], models: list[str], blocks: list[str],
                     parent_mb: float):
    """:func:`measure_blocks` in the blocks' own process (``features.own_process``), which loads the input again
    (its own measured step) as a run's does; returns the cache without the data."""
    from mmstack.own_process import peak_rss_mb
    from mmstack.pipeline import Timer, prepare
    from mmstack.store import Store

    cfg, store = _config(sets, models, blocks), Store(work)
    start, cpu = time.perf_counter(), _cpu_seconds()
    _, dataset, targets = prepare(cfg, data, store, Timer())
    _record(result, {"step": "load again (blocks' process)", "kind": "block", "rows": dataset.n_train,
                     "seconds": time.perf_counter() - start, "cpu_seconds": _cpu_seconds() - cpu,
                     "peak_mb": parent_mb + peak_rss_mb(), "out_mb": 0.0, "parent_mb": parent_mb})
    return measure_blocks(cfg, dataset, targets[0], store, work, result, parent_mb).with_data(None, None)


def child(data: Path, work: Path, result: Path, sets: list[str], models: list[str], blocks: list[str]) -> None:
    """Load the data, build each block and train each model as a run of avito-full.toml does, timing each step
    (wall seconds, and CPU seconds of this process and its children); peak RSS is the process's peak during the
    step (what it holds from earlier steps included), so the largest step peak is the run's. With
    ``features.own_process`` (avito-full.toml) this process drops its raw data and the blocks are built in a
    process of their own: a block's peak is that process's plus this one's heap (RssAnon; the libraries' file
    pages are shared). Blocks are held in memory or read back from the store as ``features.hold_in_memory`` says
    (avito-full.toml: read back)."""
    from mmstack.own_process import in_own_process, peak_rss_mb, reset_peak_rss
    from mmstack.pipeline import Timer, free_raw_data, prepare, train_models
    from mmstack.store import Store

    cfg, store = _config(sets, models, blocks), Store(work)
    start, cpu = time.perf_counter(), _cpu_seconds()
    spec, dataset, targets = prepare(cfg, data, store, Timer())
    rows, target = dataset.n_train, targets[0]
    _record(result, {"step": "load + folds", "kind": "block", "rows": rows, "seconds": time.perf_counter() - start,
                     "cpu_seconds": _cpu_seconds() - cpu, "peak_mb": peak_rss_mb(), "out_mb": 0.0})
    if cfg.get("features.own_process", False):
        free_raw_data(cfg, spec, dataset)
        cache, _ = in_own_process("features", blocks_elsewhere, data, work, result, sets, models, blocks,
                                  _mb("RssAnon"))
        cache = cache.with_data(dataset, target)
    else:
        cache = measure_blocks(cfg, dataset, target, store, work, result)
    free_raw_data(cfg, spec, dataset)  # as a run does before its models
    for model in models:
        for part in ("models", "oof"):  # what an earlier, stopped invocation left of this model (fold files)
            for path in (work / part / "avito").glob(f"{model}__*"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        reset_peak_rss()
        start, cpu = time.perf_counter(), _cpu_seconds()
        res = train_models(cfg, spec, target, store, cache, only=[model])[0]
        outs = list((work / "models" / "avito").glob(f"{model}__*")) + list((work / "oof" / "avito").glob(f"{model}__*"))
        _record(result, {"step": model, "kind": "model", "rows": rows, "seconds": time.perf_counter() - start,
                         "cpu_seconds": _cpu_seconds() - cpu, "peak_mb": peak_rss_mb(), "out_mb": folder_mb(*outs),
                         "cv": res.cv})


def group_statistics(data: Path, size: int) -> list[dict]:
    """The tabular block's group statistics on train + test + active rows, in polars (the block's own
    :func:`price_vs_groups` and :func:`group_counts`) and in pandas (groupby-transform: the same mean, median,
    z-score, rank and size per group, checked equal), side by side; CPU seconds on one polars thread."""
    import pandas as pd

    from mmstack.features.tabular import DEFAULT_COUNT_GROUPS, DEFAULT_PRICE_GROUPS, group_counts, price_vs_groups
    from mmstack.textnorm import title_key

    pool = pd.concat([pd.read_csv(data / f) for f in ("train.csv", "test.csv", "train_active.csv")],
                     ignore_index=True)
    pool["title_key"] = pool["title"].map(title_key)
    pool["log_price"] = np.log1p(pool["price"].astype(float))

    def pandas_price(cols: list[str]) -> pd.DataFrame:
        grouped = pool["log_price"].groupby([pool[c].astype("string").fillna("<NA>") for c in cols], sort=False)
        mean, median, std = grouped.transform("mean"), grouped.transform("median"), grouped.transform("std")
        return pd.DataFrame({"diff_mean": pool["log_price"] - mean, "diff_median": pool["log_price"] - median,
                             "z": (pool["log_price"] - mean) / std.where(std > 0),
                             "rank": grouped.rank(pct=True), "median": median})

    ways = {  # (what, engine): a function of nothing that computes it, conversion to polars included
        ("price statistics", "pandas"): lambda: pd.concat([pandas_price(g) for g in DEFAULT_PRICE_GROUPS], axis=1),
        ("price statistics", "polars"): lambda: price_vs_groups(pool, DEFAULT_PRICE_GROUPS),
        ("counts", "pandas"): lambda: pd.concat(
            [pool.groupby([pool[c].astype("string").fillna("<NA>") for c in g], sort=False)[g[0]].transform("size")
             for g in DEFAULT_COUNT_GROUPS], axis=1),
        ("counts", "polars"): lambda: group_counts(pool, DEFAULT_COUNT_GROUPS),
    }
    out, results = [], {}
    for (what, engine), compute in ways.items():
        start, cpu = time.perf_counter(), time.process_time()
        results[what, engine] = compute().to_numpy(np.float64)
        out.append({"step": f"group {what} ({engine})", "kind": "group", "rows": len(pool), "size": size,
                    "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu})
    for what in ("price statistics", "counts"):
        if not np.allclose(results[what, "pandas"], results[what, "polars"], equal_nan=True, atol=1e-9):
            raise RuntimeError(f"pandas and polars {what} differ")
    return out


def fit_growth(points: list[dict]) -> dict:
    """Growth exponents of seconds (CPU, where measured, and wall), linear memory fit, and full-size figures for
    one step. The CPU seconds lead: on the shared 2 cores a single-threaded step's wall time mostly measures the
    other jobs' load; the full-size time is extrapolated from them (a quiet machine's wall time)."""
    rows = np.array([p["rows"] for p in points], float)
    wall = np.array([max(p["seconds"], 1e-3) for p in points])
    cpu_known = all("cpu_seconds" in p for p in points)
    secs = np.array([max(p["cpu_seconds"], 1e-3) for p in points]) if cpu_known else wall

    def slope(values: np.ndarray) -> float:
        return float(np.polyfit(np.log(rows), np.log(values), 1)[0]) if len(points) >= 2 else float("nan")

    exponent, wall_exponent = slope(secs), slope(wall)
    # block, model and make-data steps count training rows; the group statistics count train + test rows
    full = FULL_ROWS if points[0]["kind"] == "group" else FULL_TRAIN
    largest = int(np.argmax(rows))
    scale = full / rows[largest]
    grow = max(exponent, 1.0) if np.isfinite(exponent) else 1.0
    full_secs = secs[largest] * scale ** grow
    peaks = np.array([p.get("peak_mb", np.nan) for p in points], float)
    if np.isfinite(peaks).all() and len(points) >= 2:
        slope, icpt = np.polyfit(rows, peaks, 1)
        full_peak = float(icpt + max(slope, 0) * rows[largest] * scale)
    else:
        full_peak = float(peaks[largest]) * scale if np.isfinite(peaks[largest]) else float("nan")
    outs = np.array([p.get("out_mb", np.nan) for p in points], float)
    return {"exponent": exponent, "wall_exponent": wall_exponent, "full_seconds": float(full_secs),
            "full_peak_mb": full_peak,
            "full_out_mb": float(outs[largest] * scale) if np.isfinite(outs[largest]) else float("nan")}


def table(steps: list[dict], sizes: list[int], sets: list[str]) -> str:
    names = list(dict.fromkeys(s["step"] for s in steps))
    head = " | ".join(f"{n:,} wall s / CPU s / MB" for n in sizes)
    lines = [f"| step | {head} | exponent (CPU) | exponent (wall) | full 2 cores (min) | full 4 cores (min) | "
             "full peak GB | full output GB |",
             "|---|" + "---:|" * (len(sizes) + 6)]
    total2 = total4 = 0.0
    peak_max = 0.0
    for name in names:
        points = sorted((s for s in steps if s["step"] == name), key=lambda s: s["rows"])
        growth = fit_growth(points)
        # a group step counts train + test rows: its points fill the size columns in order
        by_size = (dict(zip(sizes, points)) if points[0]["kind"] == "group"
                   else {p["rows"]: p for p in points})
        cells = [f"{p['seconds']:.1f} / {p.get('cpu_seconds', float('nan')):.1f} / "
                 f"{p.get('peak_mb', float('nan')):.0f}" if (p := by_size.get(n)) else "not run" for n in sizes]
        two = growth["full_seconds"] / 60
        four = two / (1.8 if name in THREADED else 1.0)
        if points[0]["kind"] in ("block", "model", "data"):
            total2 += two
            total4 += four
            peak_max = max(peak_max, growth["full_peak_mb"])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {growth['exponent']:.2f} | "
                     f"{growth['wall_exponent']:.2f} | {two:,.0f} | {four:,.0f} | "
                     f"{growth['full_peak_mb'] / 1024:.1f} | {growth['full_out_mb'] / 1024:.2f} |")
    summary = (f"\nSum at full size (make-data, blocks and models one after another): about {total2 / 60:.1f} h on "
               f"2 cores here and {total4 / 60:.1f} h on 4 cores; the largest extrapolated peak RSS of any step is "
               f"{peak_max / 1024:.1f} GB (extrapolated, not measured).")
    note = ("Overrides for the measured runs: " + ", ".join(f"`{s}`" for s in NO_IMAGES + sets) + "." if sets
            else "")
    return "\n".join(lines) + "\n" + summary + "\n\n" + note


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[50_000, 200_000, 500_000])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--blocks", nargs="*", default=BLOCKS, help="blocks to build (default: all but images)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="config override key=value")
    parser.add_argument("--data", type=Path, default=Path("/tmp/mmstack-scale"))
    parser.add_argument("--record", action="store_true", help="write the table into BENCHMARKS.md")
    parser.add_argument("--results", type=Path, default=None, help="JSON lines file of steps (appended)")
    parser.add_argument("--child", nargs=3, type=Path, metavar=("DATA", "WORK", "RESULT"))
    parser.add_argument("--note", default="", help="a paragraph recorded under the table (conditions)")
    parser.add_argument("--from-results", action="store_true", help="only make the table from --results")
    parser.add_argument("--keep-work", action="store_true",
                        help="go on with a stopped run: keep each size's store, measure only the steps not yet in "
                             "--results (blocks already built are reused, not measured again)")
    args = parser.parse_args()
    # one polars thread, as the other libraries get (set before polars is first imported)
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    if args.child:
        return child(*args.child, args.sets, args.models, args.blocks)
    results = args.results or args.data / "steps.jsonl"
    args.data.mkdir(parents=True, exist_ok=True)
    steps = []
    if args.from_results:
        steps = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        args.rows = sorted({s["rows"] for s in steps if s["kind"] == "data"} or args.rows)
    if args.keep_work and results.exists():  # steps of the sizes measured so far (an earlier, stopped run)
        steps = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    for rows in ([] if args.from_results else args.rows):
        done = {s["step"] for s in steps if s["rows"] == rows or s["kind"] == "group" and s.get("size") == rows}
        for step in measure_size(rows, args.data, args.sets, args.models, args.blocks, done, args.keep_work):
            steps.append(step)
            with open(results, "a") as fh:
                fh.write(json.dumps(step) + "\n")
    body = (f"## Scale (full competition size)\n\n`python benchmarks/scale.py --rows {' '.join(map(str, args.rows))}"
            f"{''.join(f' --set {s}' for s in args.sets)} --record`: configs/avito-full.toml without images, "
            "generated data (test rows in the Kaggle ratio), make-data in its own process, then all blocks and "
            "models of one size as a run of avito-full.toml does them: the blocks built in a process of their own "
            "that loads the input again and exits (`features.own_process = true`), the run's process dropping its "
            "raw data meanwhile; the models in the run's process, reading the blocks back from the store "
            "(`features.hold_in_memory = false`). Cells: wall seconds / CPU seconds (the process's and its "
            "children's) / peak RSS MB during the step (Linux's high-water mark, reset before each step; what the "
            "process holds from earlier steps included; for a block, the blocks' process's plus the run's process's "
            "heap, RssAnon, meanwhile). Exponent: b in seconds ~ rows^b fitted on the measured points, on CPU seconds (what a quiet "
            "machine's wall time would be for these single-threaded runs) and on wall seconds. Full size: 1.5M "
            "train + 0.5M test rows, CPU seconds extrapolated with max(b, 1) from the largest "
            "point, peak RSS and output linearly; 4 cores: multi-threaded steps (models, text_embed) 1.8x faster, "
            "the rest unchanged.\n\n" + table(steps, args.rows, args.sets)
            + (f"\n\n{args.note}" if args.note else ""))
    publish("scale", body, record=args.record)


if __name__ == "__main__":
    main()
