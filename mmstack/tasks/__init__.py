"""Task wiring: which loader, generator, metric, target range and submission format a task uses."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..data.dataset import Dataset
from ..errors import ConfigError
from ..store import Store


@dataclass(frozen=True)
class TaskSpec:
    """What makes a task: how to load and make its data, how to score and how to write a submission."""

    name: str
    load: Callable[[Path, Store | None, dict], Dataset]  # (input folder, store, the config's [data])
    make_data: Callable[..., dict[str, int]]
    metric: str
    target_range: tuple[float, float]
    submission_columns: tuple[str, ...]  # key column(s) of the test rows, then the prediction column
    group_column: str | None


def get_task(name: str) -> TaskSpec:
    from . import avito, relevance

    tasks = {spec.name: spec for spec in (avito.SPEC, relevance.SPEC)}
    if name not in tasks:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(sorted(tasks))}")
    return tasks[name]
