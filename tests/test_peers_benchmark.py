"""benchmarks/peers.py's own parts: the grouped outer split, the timed process and the table's goal column."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import peers  # noqa: E402


def test_outer_split_holds_out_whole_groups():
    groups = np.repeat([f"u{i}" for i in range(50)], 4)
    (fit, held), = peers.outer_splits(groups, 1)
    assert len(held) == 40 and not set(groups[fit]) & set(groups[held])
    folds = peers.outer_splits(groups, 5)
    assert len(folds) == 5 and sorted(np.concatenate([h for _, h in folds]).tolist()) == list(range(200))


def test_timed_process_reports_seconds_memory_and_status(tmp_path):
    done = peers.run_timed([sys.executable, "-c", "b = bytearray(60_000_000); print('ok')"], tmp_path / "log")
    assert done.returncode == 0 and "ok" in done.tail and done.peak_mb > 55 and done.seconds > 0
    failed = peers.run_timed([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "log2")
    assert failed.returncode == 3


def test_table_marks_the_goal():
    case = {"case": "c", "metric": "RMSE", "budget": 60, "outer": 1, "n_fit": 80, "n_held": 20,
            "kit": 0.20, "ag": 0.21, "kit_s": 50, "ag_s": 60, "kit_mb": 1, "ag_mb": 1}
    met, missed = peers.table([case])[2], peers.table([{**case, "kit": 0.209}])[2]
    assert met.endswith("| yes |") and "0.952" in met and missed.endswith("| no |")
    slow = peers.table([{**case, "kit_s": 61}])[2]
    assert slow.endswith("| no |")
