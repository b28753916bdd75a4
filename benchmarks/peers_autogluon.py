"""AutoGluon's side of the peer benchmark; runs inside AutoGluon's own virtual environment (never the kit's).

    python peers_autogluon.py TRAIN.csv TEST.csv LABEL OUT.csv --time-limit S --presets P [--drop COL ...]
                              [--exclude MODEL_TYPE ...]

Fits a TabularPredictor on TRAIN (regression, RMSE) within ``--time-limit`` seconds and writes its predictions for
TEST's rows (same order) to OUT as one column ``prediction``. Imports nothing from mmstack.
"""
from __future__ import annotations

import argparse
import json
import time

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("train")
    parser.add_argument("test")
    parser.add_argument("label")
    parser.add_argument("out")
    parser.add_argument("--time-limit", type=float, required=True)
    parser.add_argument("--presets", default="best_quality")
    parser.add_argument("--metric", default="root_mean_squared_error")
    parser.add_argument("--drop", nargs="*", default=[])
    parser.add_argument("--exclude", nargs="*", default=[], help="AutoGluon model types left out (e.g. RF XT)")
    parser.add_argument("--model-dir", required=True)
    args = parser.parse_args()
    from autogluon.tabular import TabularPredictor

    train = pd.read_csv(args.train).drop(columns=args.drop, errors="ignore")
    test = pd.read_csv(args.test).drop(columns=args.drop + [args.label], errors="ignore")
    start = time.perf_counter()
    predictor = TabularPredictor(label=args.label, problem_type="regression", eval_metric=args.metric,
                                 path=args.model_dir, verbosity=1)
    # no dynamic stacking: its hold-out sub-fit takes a quarter of the budget and, on this shared 2-core machine,
    # ended with no model at all (then "Learner is already fit") at small budgets
    predictor.fit(train, time_limit=args.time_limit, presets=args.presets, num_cpus=2, num_gpus=0,
                  dynamic_stacking=False, excluded_model_types=args.exclude or None)
    pred = predictor.predict(test)
    pd.DataFrame({"prediction": pred.to_numpy()}).to_csv(args.out, index=False)
    board = predictor.leaderboard(silent=True)
    print(json.dumps({"fit_seconds": round(time.perf_counter() - start, 1), "best": predictor.model_best,
                      "models": int(len(board))}))


if __name__ == "__main__":
    main()
