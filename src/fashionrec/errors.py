"""User-facing errors: they name file, column and row; the CLI turns them into exit code 2."""

from __future__ import annotations

from pathlib import Path


class FashionrecError(Exception):
    """Base for mistakes a user can fix; never shown as a traceback."""

    exit_code = 2


class DataError(FashionrecError):
    """Bad input data, located as precisely as we can: file, column, (first) row."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        column: str | None = None,
        row: int | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.column = column
        self.row = row
        self.message = message
        where = []
        if self.file is not None:
            where.append(self.file)
        if column is not None:
            where.append(f"column '{column}'")
        if row is not None:
            where.append(f"row {row}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ConfigError(FashionrecError):
    """A wrong option, parameter or path given by the user."""
