"""User-facing errors: one clear line naming file, column and row; the CLI prints it without a traceback."""
from __future__ import annotations


class MmstackError(Exception):
    """Base class of errors the CLI reports as one line and a non-zero exit."""

    exit_code = 2


class InputError(MmstackError):
    """Bad input data: which file, which column, which row, what was expected."""

    def __init__(self, file: str, message: str, column: str | None = None, row: int | None = None):
        self.file, self.column, self.row, self.message = str(file), column, row, message
        where = [self.file]
        if column is not None:
            where.append(f"column '{column}'")
        if row is not None:
            where.append(f"row {row}")
        super().__init__(f"{', '.join(where)}: {message}")


class ConfigError(MmstackError):
    """A config file or a --set override that cannot be used."""


class ModelError(MmstackError):
    """A model that cannot give usable predictions (e.g. non-finite ones); nothing of it is stored."""
