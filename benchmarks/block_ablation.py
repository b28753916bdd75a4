"""Block ablation on the embedded default, before and after hiding image_stats' dominant colours from the models.

    python benchmarks/block_ablation.py [--input input/avito] [--work .] [--no-record]

LightGBM with the report's ablation settings (``[ablation] params``, one thread) on the features of
configs/avito.toml's dense blocks (the token blocks feed only the cross-attention net), shuffled 5-fold CV as the
run uses: all blocks and each block left out, with the 12 dominant-colour columns of image_stats shown to the
model ("before", the old default) and hidden ("after", ``features.image_stats.dominant_colours = false``).
Reuses the run's cached features in ``--work``. Results go to BENCHMARKS.md (section "block-ablation").
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import publish  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DENSE_BLOCKS = ["basic", "text_stats", "text_tfidf", "text_embed", "image_stats", "image_embed", "tabular",
                "target_encoding", "graph"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", type=Path, default=ROOT / "input" / "avito")
    parser.add_argument("--work", type=Path, default=ROOT)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    from mmstack.config import Config
    from mmstack.models.base import train_model
    from mmstack.models.registry import make_model
    from mmstack.pipeline import Timer, assemble, build_features, prepare
    from mmstack.store import Store

    blocks = "[" + ", ".join(f'"{b}"' for b in DENSE_BLOCKS) + "]"
    cfg = Config.load(ROOT / "configs" / "avito.toml", [f"features.blocks={blocks}",
                                                        "features.image_stats.dominant_colours=true"])
    store = Store(args.work)
    spec, data, targets = prepare(cfg, args.input, store, Timer())
    target = targets[0]
    cache = build_features(cfg, data, store, targets)[target.target.name]
    params = {**cfg.model_params("lgb"), **cfg.get("ablation.params"), "num_threads": 1}

    def cv(names: list[str], hide_dominant: bool) -> float:
        model = make_model("lgb", params, cfg.seed, target.target)
        inputs = assemble(cache, names, model.input_kind, target)
        keep = [c for c in inputs.X.columns if not (hide_dominant and c.startswith("imgst_dom"))]
        inputs.X, inputs.categorical = inputs.X[keep], [c for c in inputs.categorical if c in keep]
        with tempfile.TemporaryDirectory() as tmp:  # a private store: column subsets share a model key
            return train_model(model, inputs, target, Store(tmp), spec.name).cv

    rows = []
    for hide in (False, True):
        base = cv(DENSE_BLOCKS, hide)
        deltas = {b: cv([x for x in DENSE_BLOCKS if x != b], hide) - base for b in DENSE_BLOCKS}
        rows.append((hide, base, deltas))
        print(hide, base, deltas, flush=True)
    lines = ["## Block ablation on the embedded default (before / after)", "",
             "`python benchmarks/block_ablation.py`: LightGBM with the ablation's settings, 5-fold CV RMSE on "
             "configs/avito.toml's dense blocks; delta = CV without the block minus CV with all blocks (positive: "
             "the block helps).", "",
             "| image_stats dominant colours | all blocks | " + " | ".join(f"without {b}" for b in DENSE_BLOCKS) + " |",
             "|---|---:|" + "---:|" * len(DENSE_BLOCKS)]
    for hide, base, deltas in rows:
        lines.append(f"| {'hidden (after)' if hide else 'shown (before)'} | {base:.5f} | "
                     + " | ".join(f"{deltas[b]:+.5f}" for b in DENSE_BLOCKS) + " |")
    text = "\n".join(lines)
    publish("block-ablation", text, record=not args.no_record)


if __name__ == "__main__":
    main()
