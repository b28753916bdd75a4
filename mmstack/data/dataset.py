"""A loaded task dataset: feature tables, labels kept apart, targets, unlabeled extras, image sources, fingerprint."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..targets import Target, TargetSpec, make_target
from .images import ImageSource


class LabelsWithheld(RuntimeError):
    """A feature block that does not declare ``reads_target`` asked for labels."""


@dataclass
class Dataset:
    """Everything a task reads from its input folder, validated.

    Rows are addressed by *row id*: ``train`` rows are 0..n_train-1 and ``test`` rows n_train..n_train+n_test-1,
    in file order (see :meth:`all_rows`). Neither table holds a label: labels (targets and label-like columns such
    as the relevance task's expert and crowd scores) live in ``labels``, one row per row id, missing where a row
    has no label. A row whose target label is missing is a row to predict for that target. Feature blocks that do
    not read the target get :meth:`label_free`, where ``labels`` cannot be read at all.
    """

    task: str
    train: pd.DataFrame
    test: pd.DataFrame
    id_col: str
    fingerprint: str
    input_dir: Path
    targets: list[Target] = field(default_factory=list)
    extras: dict[str, pd.DataFrame] = field(default_factory=dict)
    images: dict[str, ImageSource] = field(default_factory=dict)
    _labels: pd.DataFrame | None = field(default=None, repr=False)

    @classmethod
    def with_labels(cls, *, task: str, train: pd.DataFrame, test: pd.DataFrame, id_col: str, fingerprint: str,
                    input_dir: Path, specs: Sequence[TargetSpec], label_columns: Sequence[str] = (),
                    **kwargs) -> "Dataset":
        """Split the label columns (the targets' and ``label_columns``) out of ``train`` and ``test`` into
        ``labels`` and make the targets (class lists read from the labels). A target whose column holds no label
        is left out."""
        names = list(dict.fromkeys([s.name for s in specs] + list(label_columns)))
        parts = []
        for frame in (train, test):
            part = pd.DataFrame(index=range(len(frame)))
            for name in names:
                part[name] = frame[name].to_numpy() if name in frame.columns else np.nan
            parts.append(part)
        labels = pd.concat(parts, ignore_index=True)
        targets = [make_target(spec, labels[spec.name]) for spec in specs if labels[spec.name].notna().any()]
        drop = lambda f: f.drop(columns=[c for c in names if c in f.columns]).reset_index(drop=True)  # noqa: E731
        return cls(task=task, train=drop(train), test=drop(test), id_col=id_col, fingerprint=fingerprint,
                   input_dir=input_dir, targets=targets, _labels=labels, **kwargs)

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_test(self) -> int:
        return len(self.test)

    @property
    def n_rows(self) -> int:
        return self.n_train + self.n_test

    @property
    def labels(self) -> pd.DataFrame:
        if self._labels is None:
            raise LabelsWithheld("labels are not available here: only feature blocks that declare reads_target "
                                 "(and the fold loop) may read them")
        return self._labels

    def label_free(self) -> "Dataset":
        """The same data without access to labels (what a block that does not read the target receives)."""
        return dataclasses.replace(self, _labels=None)

    def keep_only(self, columns: Sequence[str]) -> None:
        """Drop every other feature column and the unlabelled extras, in place. For a run's steps after the feature
        blocks, which read only the blocks and a few columns (the submission's keys, the report's groups): at full
        size the free text alone is gigabytes that the models would otherwise carry."""
        for split in ("train", "test"):
            frame = getattr(self, split)
            setattr(self, split, frame[[c for c in frame.columns if c in set(columns)]])
        self.extras = {}

    def target(self, name: str | None = None) -> Target:
        """The target called ``name`` (default: the task's first, primary target)."""
        if not self.targets:
            raise LabelsWithheld("this dataset has no target with labels")
        if name is None:
            return self.targets[0]
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(f"no target {name!r}; targets: {[t.name for t in self.targets]}")

    def labelled(self, target: Target) -> tuple[np.ndarray, np.ndarray]:
        """Row ids with a label for ``target`` and their encoded labels (row-id order)."""
        column = self.labels[target.name]
        rows = np.flatnonzero(column.notna().to_numpy())
        return rows, target.encode(column.iloc[rows])

    def all_rows(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Train then test, with a ``row_id`` column and an ``is_test`` flag (no labels); ``columns``: only these
        feature columns (a copy of them alone: at full size the whole table is gigabytes)."""
        parts = [self.train, self.test] if columns is None else [self.train[list(columns)], self.test[list(columns)]]
        frame = pd.concat(parts, ignore_index=True)
        frame.insert(0, "row_id", np.arange(len(frame)))
        frame["is_test"] = np.r_[np.zeros(self.n_train, bool), np.ones(self.n_test, bool)]
        return frame
