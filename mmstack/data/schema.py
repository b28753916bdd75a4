"""Declared table schemas and the validator that turns raw CSV text into typed frames, or a clear error."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from ..errors import InputError

# Roles say how the kit uses a column.
ROLES = ("id", "target", "group", "categorical", "numeric", "text", "date", "image")
DTYPES = ("str", "float", "int", "date")


@dataclass(frozen=True)
class Column:
    """One declared column: its dtype, whether it may be empty, and its role."""

    name: str
    dtype: str
    nullable: bool
    role: str
    min_value: float | None = None
    max_value: float | None = None


@dataclass(frozen=True)
class Schema:
    """The columns a task's table must have, in no particular order (extra columns are kept as strings)."""

    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def without(self, *roles: str) -> "Schema":
        return Schema(tuple(c for c in self.columns if c.role not in roles))

    def by_role(self, role: str) -> list[str]:
        return [c.name for c in self.columns if c.role == role]


SEPARATORS = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}
# numbers beyond this overflow the float32 feature matrices (to inf), so they are rejected like inf itself
FLOAT32_MAX = float(np.finfo(np.float32).max)


def separator_hint(path: Path, separator: str) -> str:
    """'' or, when the first line has no ``separator`` but another common one, a sentence naming that one."""
    try:
        with open(path, "rb") as fh:
            first = fh.read(65536).split(b"\n", 1)[0].decode("utf-8", errors="replace")
    except OSError:
        return ""
    if separator in first:
        return ""
    counts = {sep: first.count(sep) for sep in SEPARATORS if sep != separator}
    likely = max(counts, key=counts.get)
    if not counts[likely]:
        return ""
    expected = SEPARATORS.get(separator, repr(separator))
    return (f"the file looks {SEPARATORS[likely]}-separated (its first line has {counts[likely]} {SEPARATORS[likely]} "
            f"and no {expected}); expected {expected}-separated")


def read_csv_text(path: Path, separator: str = ",", names: list[str] | None = None) -> pl.DataFrame:
    """Read a CSV (multi-line quoted fields allowed) with every column as text; errors name the file.

    ``names``: the file has no header row and these are its columns (a row with more fields is an error).
    Line endings inside values are normalised to ``\n`` (a file saved with CRLF or CR reads like one with LF).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "not a regular file" if path.exists() else "file not found")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    try:
        frame = pl.read_csv(path, infer_schema=False, separator=separator, has_header=names is None,
                            new_columns=names)
    except pl.exceptions.NoDataError:
        raise InputError(path, "file is empty") from None
    except (pl.exceptions.ComputeError, pl.exceptions.PolarsError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"not a readable CSV: {separator_hint(path, separator) or first}") from None
    if frame.height == 0:
        raise InputError(path, "file has a header but no rows")
    # quoted multi-line values keep the file's line endings: CRLF (Windows) and CR (old Mac) become LF
    return frame.with_columns(pl.all().str.replace_all("\r\n", "\n", literal=True)
                              .str.replace_all("\r", "\n", literal=True))


def _first_bad_row(mask: pl.Series) -> int:
    """1-based data row number (header not counted) of the first True in mask."""
    return int(mask.arg_true()[0]) + 1


def validate(frame: pl.DataFrame, schema: Schema, path: Path, separator: str = ",") -> pd.DataFrame:
    """Check ``frame`` (all text) against ``schema`` and return a typed pandas frame.

    Raises :class:`InputError` naming file, column and first bad row for: a missing column, a non-nullable
    column with empty values, a value that does not parse as the declared dtype, a number that is not finite
    (``inf``, ``1e400``, or beyond float32), a value outside its range.
    """
    missing = [c.name for c in schema.columns if c.name not in frame.columns]
    if missing:
        hint = separator_hint(path, separator) if frame.width == 1 else ""
        raise InputError(path, f"missing column(s) {', '.join(missing)}; found {', '.join(frame.columns)}"
                               + (f": {hint}" if hint else ""), column=missing[0])
    exprs = []
    for col in schema.columns:
        raw = pl.col(col.name).str.strip_chars()
        raw = pl.when(raw == "").then(None).otherwise(raw)
        if col.dtype in ("float", "int"):
            exprs.append(raw.cast(pl.Float64, strict=False).alias(col.name))
        elif col.dtype == "date":
            exprs.append(raw.str.to_date("%Y-%m-%d", strict=False).alias(col.name))
        else:
            exprs.append(raw.alias(col.name))
    typed = frame.with_columns(exprs)
    for col in schema.columns:
        source_present = (frame[col.name].is_not_null() & (frame[col.name].str.strip_chars() != "")).fill_null(False)
        value = typed[col.name]
        if not col.nullable and not source_present.all():
            row = _first_bad_row(~source_present)
            raise InputError(path, "empty value in a column that must always be set", column=col.name, row=row)
        if col.dtype in ("float", "int", "date"):
            unparsed = source_present & value.is_null()
            if unparsed.any():
                row = _first_bad_row(unparsed)
                expected = {"float": "a number", "int": "an integer", "date": "a date YYYY-MM-DD"}[col.dtype]
                got = frame[col.name][row - 1]
                raise InputError(path, f"expected {expected}, got {got!r}", column=col.name, row=row)
        if col.dtype == "float" and value.is_nan().any():
            raise InputError(path, "NaN spelled out as a value", column=col.name, row=_first_bad_row(value.is_nan()))
        if col.dtype in ("float", "int"):
            huge = (value.abs() > FLOAT32_MAX).fill_null(False)
            if huge.any():
                row = _first_bad_row(huge)
                raise InputError(path, f"expected a finite number, got {frame[col.name][row - 1]!r}", column=col.name,
                                 row=row)
        if col.dtype == "int":
            fractional = value.is_not_null() & (value != value.floor())
            if fractional.any():
                row = _first_bad_row(fractional)
                raise InputError(path, f"expected an integer, got {frame[col.name][row - 1]!r}", column=col.name, row=row)
        if col.min_value is not None or col.max_value is not None:
            lo = col.min_value if col.min_value is not None else float("-inf")
            hi = col.max_value if col.max_value is not None else float("inf")
            outside = value.is_not_null() & ((value < lo) | (value > hi))
            if outside.any():
                row = _first_bad_row(outside)
                raise InputError(path, f"value {value[row - 1]} outside [{lo:g}, {hi:g}]", column=col.name, row=row)
    out = typed.to_pandas()
    for col in schema.columns:
        if col.dtype == "date":
            out[col.name] = pd.to_datetime(out[col.name])
    return out


def first_row(mask) -> int:
    """1-based data row number (header not counted) of the first True in a boolean array or Series."""
    return int(np.asarray(mask).nonzero()[0][0]) + 1


def check_unique(frame: pd.DataFrame, column: str, path: Path) -> None:
    dup = frame[column].duplicated()
    if dup.any():
        row = first_row(dup)
        raise InputError(path, f"duplicated id {frame[column].iloc[row - 1]!r}", column=column, row=row)


def check_rows_for_folds(train: pd.DataFrame, n_folds: int) -> None:
    """Enough training rows for ``n_folds`` folds; the error names the file the loader read them from
    (``train.attrs['source']``)."""
    if len(train) < n_folds:
        raise InputError(train.attrs.get("source", "training data"),
                         f"only {len(train)} training rows for {n_folds} folds (folds.n_folds)")
