"""Task wiring: which loader and generator a task uses, its targets, and how its submission is written."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..data.dataset import Dataset
from ..errors import ConfigError
from ..store import Store
from ..targets import TargetSpec


@dataclass(frozen=True)
class TaskSpec:
    """What makes a task: how to load and make its data, what it predicts, how to write a submission.

    ``targets``: the targets the task declares (their labels come from the loader; a target without any label in
    the data is left out). ``key_columns``: columns of the predicted rows that identify them in the submission;
    each target then gets a column named after it (the value or the class) and, with ``probabilities``, one column
    per class probability. ``outputs``: the task's extra outputs (see :class:`mmstack.pipeline.RunContext`);
    ``submission_file``: the name of the predictions file in the run folder.
    """

    name: str
    load: Callable[[Path, Store | None, dict], Dataset]  # (input folder, store, the config's [data])
    make_data: Callable[..., dict[str, int]]
    targets: tuple[TargetSpec, ...]
    key_columns: tuple[str, ...]
    group_column: str | None
    probabilities: bool = False
    # a task's own outputs beside the submission (files in the run folder, metrics, report sections):
    # called with a RunContext once every target is stacked; returns a TaskOutputs (mmstack.pipeline)
    outputs: Callable | None = None
    submission_file: str = "submission.csv"


def get_task(name: str) -> TaskSpec:
    from . import avito, products, relevance

    tasks = {spec.name: spec for spec in (avito.SPEC, relevance.SPEC, products.SPEC)}
    if name not in tasks:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(sorted(tasks))}")
    return tasks[name]
