"""A wall-clock budget for a run (``--time-limit SECONDS`` / ``task.time_limit``), as AutoGluon users expect.

The run plans from cheap measurements and never leaves a model half-trained in the stack:

- **feature blocks** are estimated from the row count and each block's measured throughput
  (``FeatureBlock.rows_per_second``, from BENCHMARKS.md on this 2-core machine); a block that would not fit in the
  features' share of the budget is skipped (and with it the blocks and models that need it);
- **models** train in the configured order; each fold is timed, and a model whose remaining folds would not fit
  in what is left (minus the reserve for stacking and the report) stops before its next fold and is left out of
  the stack (its finished folds stay in the store: a later run with more time resumes them);
- the **ablation** runs only when its estimate fits.

Everything skipped is reported with the reason (log, metrics.json ``budget``, report). Without a limit nothing is
planned or skipped: behaviour is as without this module.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


def process_age() -> float:
    """Seconds since this process started (0 where /proc is not there): a ``--time-limit`` is wall-clock from the
    command's start, as the user times it, so imports and start-up count too."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class ModelSkipped(Exception):
    """A model stopped by the budget before its next fold (its finished folds stay in the store)."""


@dataclass
class Budget:
    """Seconds allowed for a run (None: no limit), when it started, and what was skipped and why."""

    limit: float | None = None
    started: float = field(default_factory=time.perf_counter)
    features_share: float = 0.4  # of the budget, for the feature blocks
    reserve_share: float = 0.15  # kept back for stacking and the report (its plots take seconds)
    min_reserve: float = 10.0
    min_model_share: float = 0.05  # a model starts only with at least this share of the budget left
    # a block estimated under this share of the budget is built even past the features' share (while the run has
    # time before the reserve): one slow block must not starve the cheap ones (encodings, tabular) that come after
    cheap_block_share: float = 0.03
    skipped: list[dict[str, Any]] = field(default_factory=list)
    # (estimated, measured) seconds of the blocks built in this run: throughputs were measured on a quiet machine,
    # so the ratio tells how much slower this one is now (a shared machine ran 10x slower) for the blocks to come
    built: list[tuple[float, float]] = field(default_factory=list)
    max_slowdown: float = 20.0

    @property
    def limited(self) -> bool:
        return self.limit is not None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        """Seconds left before the limit (infinite without one)."""
        return float("inf") if self.limit is None else self.limit - self.elapsed()

    def reserve(self) -> float:
        return 0.0 if self.limit is None else max(self.min_reserve, self.reserve_share * self.limit)

    def skip(self, kind: str, name: str, why: str) -> None:
        self.skipped.append({"kind": kind, "name": name, "why": why, "at_seconds": round(self.elapsed(), 1)})
        log.warning("time limit: skipped %s %s: %s", kind, name, why)

    def block_built(self, estimate: float, seconds: float) -> None:
        """Record a block built in this run: its estimate from the throughput and the seconds it took."""
        if estimate > 0:
            self.built.append((estimate, seconds))

    def slowdown(self) -> float:
        """Measured / estimated seconds of the blocks built so far (at least 1; 1 until they add up to 0.5 s
        estimated, below which fixed costs dominate)."""
        estimated = sum(e for e, _ in self.built)
        if estimated < 0.5:
            return 1.0
        return min(self.max_slowdown, max(1.0, sum(m for _, m in self.built) / estimated))

    def block_fits(self, name: str, estimate: float) -> bool:
        """Does a block estimated at ``estimate`` seconds (times the measured :meth:`slowdown`) fit in what is
        left of the features' share?"""
        if self.limit is None:
            return True
        estimate *= self.slowdown()
        left = self.features_share * self.limit - self.elapsed()
        if estimate <= left or estimate <= min(self.cheap_block_share * self.limit, self.left() - self.reserve()):
            return True
        self.skip("block", name, f"estimated {estimate:.0f} s from its throughput, {max(left, 0):.0f} s left "
                                 "for features")
        return False

    def fold_deadline(self, model: str, fold: int, n_folds: int, fold_seconds: list[float]) -> float | None:
        """Before fitting fold ``fold`` (0-based): stop the model when its remaining folds will not fit
        (:class:`ModelSkipped`); else the ``time.monotonic()`` by which this fold must end, so that the remaining
        folds share what is left (a family stops boosting or its epochs there; None without a limit)."""
        if self.limit is None:
            return None
        self.check_fold(model, fold, n_folds, fold_seconds)
        share = (self.left() - self.reserve()) / (n_folds - fold)
        return time.monotonic() + max(share, 0.0)

    def check_fold(self, model: str, fold: int, n_folds: int, fold_seconds: list[float]) -> None:
        """Before fitting fold ``fold`` (0-based): stop the model when its remaining folds will not fit."""
        if self.limit is None:
            return
        left = self.left() - self.reserve()
        if fold_seconds:
            estimate = sum(fold_seconds) / len(fold_seconds) * (n_folds - fold)
            why = f"{n_folds - fold} more folds at {sum(fold_seconds) / len(fold_seconds):.1f} s each"
        else:  # a model's first fold: it needs a fair share of what is left, or it would be cut to nothing
            estimate, why = self.min_model_share * (self.limit or 0.0), "too little time left for a model"
        if left <= 0 or estimate > left:
            raise ModelSkipped(f"{why} need ~{estimate:.0f} s, {max(left, 0):.0f} s left before the reserve")

    def fits(self, kind: str, name: str, estimate: float) -> bool:
        """Does a step estimated at ``estimate`` seconds fit before the reserve? (Recorded as skipped if not.)"""
        if self.limit is None:
            return True
        left = self.left() - self.reserve()
        if estimate <= left:
            return True
        self.skip(kind, name, f"estimated {estimate:.0f} s, {max(left, 0):.0f} s left before the reserve")
        return False

    def summary(self) -> dict[str, Any]:
        return {"limit": self.limit, "seconds": round(self.elapsed(), 1), "skipped": list(self.skipped)}
