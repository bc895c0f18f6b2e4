"""Exceptions and warnings raised by daskrec."""

from __future__ import annotations

__all__ = ["DaskrecError", "InputError", "ConfigError", "IndexingError", "ServiceError", "DataWarning"]


class DaskrecError(Exception):
    """Base class of every error daskrec raises on purpose."""


class ConfigError(DaskrecError, ValueError):
    """An option has a value daskrec cannot use."""


class IndexingError(DaskrecError):
    """Writing the indicators to the search index failed; the alias was left where it was."""


class ServiceError(DaskrecError):
    """Elasticsearch is unreachable, refuses the credentials, or speaks another major version."""


class DataWarning(UserWarning):
    """The input is usable but suspicious (for example, rows were skipped)."""


class InputError(DaskrecError):
    """The events input is missing, empty or malformed.

    Parameters
    ----------
    message
        What is wrong, ending with the remedy.
    path
        The file concerned, when known.
    row
        1-based data row (the header is not counted), when known.
    column
        The column concerned, when known.
    value
        The offending value, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        row: int | None = None,
        column: str | None = None,
        value: object = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.row = row
        self.column = column
        self.value = value

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only fields must survive pickling between Dask workers and the client.
        return (_rebuild_input_error, (self.message, self.path, self.row, self.column, self.value))

    def __str__(self) -> str:
        where = [
            part
            for part in (
                self.path,
                f"row {self.row}" if self.row is not None else None,
                f"column {self.column!r}" if self.column is not None else None,
                f"value {self.value!r}" if self.value is not None else None,
            )
            if part is not None
        ]
        return f"{', '.join(where)}: {self.message}" if where else self.message


def _rebuild_input_error(
    message: str, path: str | None, row: int | None, column: str | None, value: object
) -> InputError:
    return InputError(message, path=path, row=row, column=column, value=value)
