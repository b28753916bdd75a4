"""The two PyTorch nets against a plain MLP on the same inputs, on the embedded default; CV, fold wins, seconds.

    python benchmarks/nets.py [--data input/avito] [--work .]

By default it reads the embedded default data and the work folder of `./run.sh` (generating the data the way
`./run.sh` does when it is missing), so after `./run.sh` the three models are reused from that run's cache and
their recorded fit seconds are the run's own. All three see the default config's dense blocks; xattn adds the
image and text token blocks, gnn the listing graph. Results go to BENCHMARKS.md (section "nets").
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import bench_config, fit_in_child  # noqa: E402
from record import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NETS = ["xattn", "gnn"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT / "input" / "avito")
    parser.add_argument("--work", type=Path, default=ROOT)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config overrides")
    args = parser.parse_args()
    cfg = bench_config(args.overrides)
    if not (args.data / "train.csv").exists():
        from mmstack.data.avito_synth import write_avito

        write_avito(args.data, rows=int(cfg.get("data.rows")), seed=42, images=True)
    results = {m: fit_in_child(m, args.data, args.work, args.overrides) for m in ["mlp", *NETS]}
    mlp = results["mlp"]
    latest = args.work / "submissions" / "latest" / "metrics.json"
    without = json.loads(latest.read_text())["stack"].get("without_model", {}) if latest.exists() else {}
    lines = ["## PyTorch nets vs a plain MLP", "",
             f"`python benchmarks/nets.py`: the embedded default ({cfg.get('data.rows'):,} training rows with images, "
             f"seed 42), {cfg.get('folds.n_folds')}-fold CV, configs/avito.toml as shipped. The MLP sees the dense "
             "blocks; xattn the same plus the image-patch and text tokens; gnn the same plus the listing graph. "
             "Fold wins: folds where the net's RMSE is below the MLP's on the same fold. CPU only (no GPU was lent to "
             "this task); seconds are the fit of all folds on 2 cores, as recorded by the run that trained them. "
             "'Stack without it': how much the latest run's stacked CV (nested) worsens when the model is left out.",
             "", "| model | CV RMSE | vs MLP | fold wins vs MLP | fold RMSEs | epochs (max) | fit seconds | s per fold "
             "| stack without it |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        folds = np.asarray(r["folds"])
        wins = "" if name == "mlp" else f"{int((folds < np.asarray(mlp['folds'])).sum())}/{len(folds)}"
        delta = "" if name == "mlp" else f"{r['cv'] - mlp['cv']:+.5f}"
        stack_delta = f"{without[name]['delta']:+.5f}" if name in without else ""
        lines.append(f"| {name} | {r['cv']:.5f} | {delta} | {wins} | {' '.join(f'{f:.4f}' for f in folds)} | "
                     f"{r['params'].get('epochs', '')} | {r['fit_seconds']:.0f} | "
                     f"{r['fit_seconds'] / len(folds):.0f} | {stack_delta} |")
        print(f"{name:6s} cv {r['cv']:.5f} {delta:>9s} wins {wins:>4s} fit {r['fit_seconds']:.0f}s"
              f"{'  (reused)' if r['reused'] else ''}", flush=True)
    write_section("nets", "\n".join(lines))


if __name__ == "__main__":
    main()
