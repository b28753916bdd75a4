"""The leaderboard of runs: one line per run in ``submissions/runs.jsonl``, newest last."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .store import Store, write_text


def runs_path(store: Store) -> Path:
    return store.dir("submissions") / "runs.jsonl"


def load_runs(store: Store, task: str | None = None) -> list[dict[str, Any]]:
    path = runs_path(store)
    if not path.is_file():
        return []
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in runs if task is None or r["task"] == task]


def append_run(store: Store, record: dict[str, Any]) -> None:
    """Add one run to the log (rewritten atomically, so a crash never leaves half a line)."""
    path = runs_path(store)
    old = path.read_text() if path.is_file() else ""
    write_text(path, old + json.dumps(record, ensure_ascii=False, default=str) + "\n")


def lower_is_better(record: dict[str, Any]) -> bool:
    """The direction of a run's stack score (older runs did not record it: read it from the metric's name)."""
    if "greater_is_better" in record:
        return not record["greater_is_better"]
    from .metrics import METRICS

    metric = METRICS.get(record.get("metric", ""))
    return True if metric is None else not metric.greater_is_better
