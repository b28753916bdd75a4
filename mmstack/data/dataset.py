"""A loaded task dataset: typed train and test tables, unlabeled extras, image sources and a fingerprint."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .images import ImageSource


@dataclass
class Dataset:
    """Everything a task reads from its input folder, validated.

    ``train`` holds the target column; ``test`` does not. Rows are addressed by *row id*: training rows are
    0..n_train-1 and test rows n_train..n_train+n_test-1, in file order (see :meth:`all_rows`).
    """

    task: str
    train: pd.DataFrame
    test: pd.DataFrame
    target: str
    id_col: str
    fingerprint: str
    input_dir: Path
    extras: dict[str, pd.DataFrame] = field(default_factory=dict)
    images: dict[str, ImageSource] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_test(self) -> int:
        return len(self.test)

    @property
    def y(self) -> np.ndarray:
        return self.train[self.target].to_numpy(dtype=np.float64)

    def all_rows(self) -> pd.DataFrame:
        """Train (without the target) then test, with a ``row_id`` column and an ``is_test`` flag."""
        train = self.train.drop(columns=[self.target])
        frame = pd.concat([train, self.test], ignore_index=True)
        frame.insert(0, "row_id", np.arange(len(frame)))
        frame["is_test"] = np.r_[np.zeros(len(train), bool), np.ones(len(self.test), bool)]
        return frame
