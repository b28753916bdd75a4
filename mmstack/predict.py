"""Predictions from a finished run's store alone: the saved fold models and the saved blender, in any process.

Nothing of the training run is needed: each level-1 run's json names its feature blocks by key (read back from
``features/``), each fold file holds the model (params, seed, target) with its fitted state, and the stack file
holds the fitted blender. This is the inference path of search, of a predict-only Kaggle kernel and of a service.
"""
from __future__ import annotations

import numpy as np

from .features.base import BlockOutput
from .models.base import fold_path, load_fold
from .models.registry import MODELS, _load_all
from .stack.stacking import load_stack
from .store import Store, read_json


def level1_predictions(store: Store, task: str, name: str, rows: np.ndarray) -> np.ndarray:
    """Fold-averaged predictions (rows x outputs) of the level-1 run ``name`` (``<model>__<key>``) for the row ids
    ``rows``, from its saved fold models and its stored blocks."""
    from .pipeline import join_blocks

    info = read_json(store.path("oof", task, name, ".json"))
    _load_all()
    outputs = {block: BlockOutput.load(store.path("features", block, key)) for block, key in info["blocks"].items()}
    inputs = join_blocks(outputs, info["blocks"], MODELS[info["model"]].input_kind, train_ids=np.zeros(0, np.int64),
                         test_ids=np.asarray(rows, np.int64))
    X = inputs.rows(inputs.test_ids)
    preds = []
    for k in range(len(info["folds"])):
        if not fold_path(store, task, name, k).is_file():
            raise FileNotFoundError(f"{name}: fold {k} is not in the store")
        model, fitted = load_fold(store, task, name, k)
        model.bind(inputs)
        preds.append(model.target.finish(model.predict_fitted(fitted, X)))
    return model.target.finish(np.mean(preds, axis=0))


def run_predictions(store: Store, task: str, metrics: dict, rows: np.ndarray, target: str | None = None) -> np.ndarray:
    """The stacked predictions (rows x outputs) of a run (its ``metrics.json``) for ``rows``: every level-1 model
    of the target predicts, and the saved blender blends them."""
    section = metrics["targets"][target] if target else metrics
    names = [f"{model}__{m['key']}" for model, m in section["models"].items()]
    stacked = load_stack(store, task, section["stack"]["key"])
    P = np.stack([level1_predictions(store, task, n, rows) for n in names], axis=1)
    return stacked.blend(P)
