"""Read an events log into a Dask DataFrame and cut it to each visitor's recent rows.

I/O lives in :func:`read_events` and :func:`read_partitions` (and the per-partition reader both
map); everything else here maps frames to frames.

The frame that :func:`read_events` yields (and each partition of :func:`read_partitions`) has one
row per event of the selected types:

``visitorid``, ``itemid``
    Original ids: ``int64`` when every value of the column is a decimal integer, else strings
    (so ``007`` and ``7`` are one id, as with :func:`pandas.read_csv`).
``timestamp``
    Epoch milliseconds, ``int64``.
``position``
    ``int64`` that orders rows as they stand in the input (files in the order given, then
    rows), used to break timestamp ties: a later row counts as more recent.
``matrix``
    ``int8``: 0 for the primary event types, ``1 + t`` for the cross-occurrence type ``t`` (see
    :func:`matrix_codes`).
``bad_column``
    ``int8``: 0 for a good row, else 1 + the index in :data:`BAD_ROW_CAUSES` of what is wrong
    with it: its first malformed column, or ``fields`` for a row that cannot be split into the
    header's fields (too few or too many, an unclosed quote). Only with ``on_bad_rows="skip"``;
    with ``"error"`` reading stops at the first bad row instead.

Compressed CSV files (``.gz``, ``.bz2``, ``.zst``) are read whole, one partition per file, since
a compressed stream cannot be split: ship a large log as several compressed files.
"""

from __future__ import annotations

import io
import logging
import posixpath
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Literal

import fsspec
import numba
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from fsspec.utils import read_block

from .config import IngestConfig
from .errors import InputError

if TYPE_CHECKING:
    import dask.dataframe as dd
    from dask.delayed import Delayed

log = logging.getLogger(__name__)

__all__ = ["REQUIRED_COLUMNS", "BAD_ROW_CAUSES", "IdKinds", "EventFile", "expand_inputs", "read_events", "read_partitions", "by_visitor_bucket", "keep_recent", "latest_pairs"]

REQUIRED_COLUMNS = ("timestamp", "visitorid", "event", "itemid")
"""Columns of the events layout that daskrec reads (``transactionid`` may be present)."""
BAD_ROW_CAUSES = (*REQUIRED_COLUMNS, "fields")
"""What can make a row bad: one of its columns, or its fields as a whole."""
_BAD_FIELDS = len(BAD_ROW_CAUSES)
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}
"""CSV file endings read as compressed, and their codec."""
_SHOWN_CHARS = 80

IdKind = Literal["int", "str"]
_ROW_BITS = 32  # position = partition number << 32 | row within the partition
_INT_PATTERN = r"^\s*[+-]?[0-9]{1,18}\s*$"


@dataclass(frozen=True)
class IdKinds:
    """How the two id columns are typed."""

    visitorid: IdKind = "int"
    """``int`` (int64) or ``str``."""

    itemid: IdKind = "int"
    """``int`` (int64) or ``str``."""

    def with_strings(self, column: str) -> IdKinds:
        """The same kinds with ``column`` read as strings."""
        return IdKinds(**{**self.__dict__, column: "str"})


class StringIdsFound(Exception):
    """A CSV id column read as integers holds text: the read is redone with string ids."""

    def __init__(self, column: str) -> None:
        super().__init__(column)
        self.column = column


@dataclass(frozen=True)
class EventFile:
    """One input file: its fsspec URL, format, header and (Parquet) layout."""

    url: str
    format: Literal["csv", "parquet"]
    size: int
    header: tuple[str, ...]
    text_id_columns: tuple[str, ...] = ()
    """Parquet: id columns stored as strings."""
    row_groups: tuple[int, ...] = ()
    """Parquet: rows per row group."""
    compression: str | None = None
    """CSV: the codec of a compressed file (read whole), or None."""


@dataclass(frozen=True)
class _Block:
    """One partition to read: a byte range of a CSV file or one Parquet row group."""

    file: EventFile
    number: int
    offset: int
    length: int
    row_group: int | None = None
    rows_before: int | None = None


# --------------------------------------------------------------------------------------------- I/O


def expand_inputs(inputs: Sequence[str | EventFile]) -> list[EventFile]:
    """Resolve paths, globs and fsspec URLs to the event files they name, checking each header.

    Parameters
    ----------
    inputs
        Paths, glob patterns or fsspec URLs of CSV files (plain, or compressed as ``.gz``,
        ``.bz2``, ``.zst``) or Parquet files (``.parquet``, ``.pq``), or folders of Parquet
        files. Already resolved files pass through.

    Returns
    -------
    list of EventFile
        In the order given; each glob's matches sorted by name.

    Raises
    ------
    InputError
        A path matches no file, a file is empty, cannot be decompressed, or lacks a required column.
    """
    if not inputs:
        raise InputError("no input given; name at least one events file.")
    files: list[EventFile] = []
    for pattern in inputs:
        if isinstance(pattern, EventFile):
            files.append(pattern)
            continue
        fs, _, paths = fsspec.get_fs_token_paths(pattern)
        expanded: list[str] = []
        for path in sorted(paths):
            if fs.isdir(path):
                expanded += sorted(p for p in fs.find(path) if p.endswith((".parquet", ".pq")))
            else:
                expanded.append(path)
        if not expanded:
            raise InputError("no such file; check the path or glob.", path=pattern)
        for path in expanded:
            files.append(_describe_file(fs, path, fs.unstrip_protocol(path) if "://" in pattern else path))
    return files


def _describe_file(fs: fsspec.AbstractFileSystem, path: str, url: str) -> EventFile:
    if not fs.exists(path):
        raise InputError("no such file; check the path or glob.", path=url)
    size = int(fs.size(path))
    if size == 0:
        raise InputError("the file is empty; give an events log with a header and rows.", path=url)
    if not path.endswith((".parquet", ".pq")):
        compression = COMPRESSIONS.get(posixpath.splitext(path)[1].lower())
        with _open_text(fs, path, url, compression) as f:
            first_line = f.readline()
            has_rows = bool(f.read(1 << 16).strip())
        header = tuple(name.strip().strip('"') for name in first_line.decode("utf-8", errors="replace").strip().split(","))
        _check_header(header, url)
        if not has_rows:
            raise InputError("the file has a header but no rows; give an events log with rows.", path=url)
        return EventFile(url=url, format="csv", size=size, header=header, compression=compression)
    with fs.open(path, "rb") as f:
        try:
            parquet = pq.ParquetFile(f)
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError(f"not a readable Parquet file ({err}).", path=url) from None
        schema, metadata = parquet.schema_arrow, parquet.metadata
    header = tuple(schema.names)
    _check_header(header, url)
    return EventFile(
        url=url,
        format="parquet",
        size=size,
        header=header,
        text_id_columns=tuple(
            column for column in ("visitorid", "itemid") if _parquet_id_kind(schema.field(column).type, url, column) == "str"
        ),
        row_groups=tuple(metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)),
    )


def _check_header(header: tuple[str, ...], url: str) -> None:
    for column in REQUIRED_COLUMNS:
        if column not in header:
            raise InputError(
                f"missing column; the header has {list(header)}, and daskrec needs {list(REQUIRED_COLUMNS)}.",
                path=url,
                column=column,
            )


@contextmanager
def _open_text(fs: fsspec.AbstractFileSystem, path: str, url: str, compression: str | None) -> Iterator[IO[bytes]]:
    """The file's bytes, decompressed; a stream that is not what its ending says is an InputError."""
    with fs.open(path, "rb") as raw:
        if compression is None:
            yield raw
            return
        try:
            yield io.BufferedReader(pa.CompressedInputStream(raw, compression))
        except OSError as err:
            raise InputError(
                f"cannot be read as {compression} ({err}); check that the file ending matches its compression.",
                path=url,
            ) from None


def read_csv_bytes(file: EventFile) -> bytes:
    """The whole text of a CSV event file, decompressed (for a compressed file's one partition).

    Raises
    ------
    InputError
        The file cannot be decompressed.
    """
    fs, path = fsspec.core.url_to_fs(file.url)
    with _open_text(fs, path, file.url, file.compression) as f:
        try:
            return f.read()
        except OSError as err:
            raise InputError(
                f"cannot be read as {file.compression} ({err}); the file may be truncated.", path=file.url
            ) from None


def read_events(
    files: list[EventFile], config: IngestConfig, id_kinds: IdKinds = IdKinds(), *, other_types: bool = False
) -> dd.DataFrame:
    """A lazy Dask DataFrame of the events of the selected types, one partition per block.

    CSV files are split into ``config.blocksize`` byte ranges, Parquet files into row groups;
    the event filter is applied inside each partition's read (for Parquet, by the reader).

    Parameters
    ----------
    files
        From :func:`expand_inputs`.
    config
        Event types, bad-row policy and block size.
    id_kinds
        How to type the id columns; a column stored as strings in any Parquet file is read as
        strings from every file.
    other_types
        Also read the rows of event types that are neither primary nor cross (``matrix`` -1).

    Returns
    -------
    dask.dataframe.DataFrame
        Columns as described in the module docstring.

    Raises
    ------
    InputError
        At compute time: a malformed row (with ``on_bad_rows="error"``), naming file, row and column.
    StringIdsFound
        At compute time: a CSV id column holds text; read again with ``id_kinds.with_strings(column)``.
    """
    import dask.dataframe as dd  # ~1.2 s of imports (dask.array among them): only when a frame is asked for

    kinds = _id_kinds_of(files, id_kinds)
    blocks = _plan_blocks(files, config.blocksize)
    frame: dd.DataFrame = dd.from_map(
        _read_block,
        blocks,
        **_reader_options(config, kinds, other_types),
        meta=_empty_frame(kinds),
        divisions=[None] * (len(blocks) + 1),
        enforce_metadata=False,
        label="read-events",
    )
    return frame


def read_partitions(files: list[EventFile], config: IngestConfig, id_kinds: IdKinds = IdKinds()) -> list[Delayed]:
    """The partitions of :func:`read_events` (primary and cross types only) as Dask delayed
    pandas frames, one per block, without building a DataFrame.

    The build only ever hands each partition to a task of its own, so it reads them this way:
    the same reader, the same partitions, but without importing ``dask.dataframe`` (1.2 s of a
    small build's process, measured; see the README, "Benchmarks"). Computing a partition raises
    what computing :func:`read_events` would.
    """
    from dask.base import tokenize
    from dask.delayed import delayed

    kinds = _id_kinds_of(files, id_kinds)
    options = _reader_options(config, kinds, other_types=False)
    token = tokenize(files, options)
    return [
        delayed(_read_block)(block, **options, dask_key_name=f"read-events-{token}-{block.number}")
        for block in _plan_blocks(files, config.blocksize)
    ]


def _reader_options(config: IngestConfig, id_kinds: IdKinds, other_types: bool) -> dict[str, Any]:
    """The keyword arguments of :func:`_read_block` besides its block."""
    return {
        "primary": config.event_types,
        "cross": config.cross_event_types,
        "other_types": other_types,
        "id_kinds": id_kinds,
        "skip_bad_rows": config.on_bad_rows == "skip",
    }


def _id_kinds_of(files: list[EventFile], requested: IdKinds) -> IdKinds:
    """Text ids anywhere make the column text everywhere: in a Parquet schema, or as requested
    (after a CSV block turned out to hold text)."""
    for f in files:
        for column in f.text_id_columns:
            requested = requested.with_strings(column)
    return requested


def _parquet_id_kind(field_type: pa.DataType, url: str, column: str) -> IdKind:
    if pa.types.is_dictionary(field_type):
        field_type = field_type.value_type
    if pa.types.is_integer(field_type):
        return "int"
    if pa.types.is_string(field_type) or pa.types.is_large_string(field_type):
        return "str"
    raise InputError(
        f"ids must be integers or strings, not {field_type}; convert the column before building.",
        path=url,
        column=column,
    )


def _plan_blocks(files: list[EventFile], blocksize: int) -> list[_Block]:
    blocks: list[_Block] = []
    for f in files:
        if f.format == "parquet":
            rows_before = 0
            for group, rows in enumerate(f.row_groups):
                blocks.append(_Block(f, len(blocks), 0, 0, row_group=group, rows_before=rows_before))
                rows_before += rows
        elif f.compression is not None:
            blocks.append(_Block(f, len(blocks), 0, f.size))
        else:
            for offset in range(0, f.size, blocksize):
                blocks.append(_Block(f, len(blocks), offset, min(blocksize, f.size - offset)))
    return blocks


def _read_block(
    block: _Block,
    primary: tuple[str, ...] | None,
    cross: tuple[str, ...],
    other_types: bool,
    id_kinds: IdKinds,
    skip_bad_rows: bool,
) -> pd.DataFrame:
    """Read one partition: parse, keep the selected events, type and validate only those."""
    event_types = None if primary is None or other_types else (*primary, *cross)
    bad_rows: list[_BadRow] = []
    if block.file.format == "parquet":
        table = _read_parquet_group(block, event_types)
    else:
        if block.file.compression is not None:
            data = read_csv_bytes(block.file)
        else:
            with fsspec.open(block.file.url, "rb") as handle:
                data = read_block(handle, block.offset, block.length, delimiter=b"\n")
        if block.offset == 0:
            data = data[data.find(b"\n") + 1 :] if b"\n" in data else b""
        table, bad_rows = _parse_csv(data, block.file.header, id_kinds)
    rows = _selected_rows(table, event_types)
    selected = _take_rows(table, rows)
    values, bad_column = _check_rows(selected, id_kinds)
    if not skip_bad_rows and (bad_column.any() or bad_rows):
        _raise_bad_row(block, table, event_types, id_kinds, bad_rows)
    frame = pd.DataFrame(
        {
            "visitorid": values["visitorid"],
            "itemid": values["itemid"],
            "timestamp": values["timestamp"],
            "position": (np.int64(block.number) << _ROW_BITS) + rows.astype(np.int64),
            "matrix": matrix_codes(selected.column("event"), primary, cross),
            "bad_column": bad_column,
        },
        copy=False,  # pandas 3 would copy the columns into one block: ~35 ms of a 2M-row block's read
    )
    if not bad_rows:
        return frame
    # Rows that could not be parsed are counted as read and skipped, like any bad row: one for
    # each line they span (the lines an unclosed quote ran over could not be read either).
    causes = [1 + BAD_ROW_CAUSES.index(row.cause) for row in bad_rows for _ in range(row.lines)]
    blank = {"int": 0, "str": ""}
    unparsed = pd.DataFrame(
        {
            "visitorid": [blank[id_kinds.visitorid]] * len(causes),
            "itemid": [blank[id_kinds.itemid]] * len(causes),
            "timestamp": 0,
            "position": (np.int64(block.number) << _ROW_BITS) + len(table) + np.arange(len(causes), dtype=np.int64),
            "matrix": -1,
            "bad_column": causes,
        }
    ).astype(_empty_frame(id_kinds).dtypes.to_dict())
    return pd.concat([frame, unparsed], ignore_index=True)


def matrix_codes(event: pa.ChunkedArray, primary: tuple[str, ...] | None, cross: tuple[str, ...]) -> np.ndarray:
    """Per row, 0 for a primary event type (every type when ``primary`` is None), ``1 + t`` for
    the cross type ``cross[t]``, -1 for any other type.

    Examples
    --------
    >>> matrix_codes(pa.chunked_array([["buy", "view", "cart", "like"]]), ("buy",), ("cart", "view")).tolist()
    [0, 2, 1, -1]
    """
    if primary is None:
        return np.zeros(len(event), dtype=np.int8)
    code = {name: 0 for name in primary} | {name: 1 + t for t, name in enumerate(cross)}
    return _per_event(event, lambda value: code.get(value, -1) if value is not None else -1, np.int8)


def _selected_rows(table: pa.Table, event_types: tuple[str, ...] | None) -> np.ndarray:
    """Indices of the rows of the selected event types, and of rows with no event type at all
    (malformed whatever was selected: nobody can tell what they were)."""
    if event_types is None:
        return np.arange(len(table))
    wanted = set(event_types)
    return np.flatnonzero(_per_event(table.column("event"), lambda value: value is None or value in wanted, np.bool_))


def _per_event(event: pa.ChunkedArray, rule: Callable[[str | None], object], dtype: type) -> np.ndarray:
    """``rule`` of each row's event type, applied once per distinct type (``None``: missing).

    A log has a handful of event types: CSV blocks parse the column dictionary-encoded, so each
    rule is a lookup (against Arrow's ``is_in`` and ``match_substring`` on every row: 100–140 ms
    of a 2M-row block's 650 ms read, measured 2026-12-01).
    """
    column = event.combine_chunks() if isinstance(event, pa.ChunkedArray) else event  # one dictionary
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    values = column.dictionary.to_pylist()
    looked_up: np.ndarray = np.array([rule(value) for value in [*values, None]], dtype=dtype)  # [-1]: missing
    return looked_up[np.asarray(pc.fill_null(column.indices, -1), dtype=np.int64)]


def _take_rows(table: pa.Table, rows: np.ndarray) -> pa.Table:
    return table if len(rows) == len(table) else table.take(pa.array(rows))


def _check_rows(table: pa.Table, id_kinds: IdKinds) -> tuple[dict[str, np.ndarray | pd.Series], np.ndarray]:
    """The typed columns, and per row 0 or 1 + the index of its first malformed column."""
    event = table.column("event")
    malformed = {"event": _per_event(event, lambda value: value is None or "\n" in value, np.bool_)}
    values: dict[str, np.ndarray | pd.Series] = {}
    for name in ("timestamp", "visitorid", "itemid"):
        values[name], malformed[name] = _typed_column(table.column(name), name, id_kinds)
    bad_column = np.zeros(len(table), dtype=np.int8)
    for code in range(len(REQUIRED_COLUMNS), 0, -1):
        bad_column[malformed[REQUIRED_COLUMNS[code - 1]]] = code
    return values, bad_column


def _raise_bad_row(
    block: _Block, table: pa.Table, event_types: tuple[str, ...] | None, id_kinds: IdKinds, bad_rows: list[_BadRow]
) -> None:
    """Raise :class:`InputError` for the block's first bad row (a malformed column, or a row that
    could not be parsed), with its row number in the file."""
    if block.file.format == "csv":
        rows_before = _rows_before(block)
    else:
        # The reader filtered rows away: find the row again in the whole row group.
        fs, path = fsspec.core.url_to_fs(block.file.url)
        with fs.open(path, "rb") as handle:
            table = pq.ParquetFile(handle).read_row_group(block.row_group or 0, columns=list(REQUIRED_COLUMNS))
        rows_before = block.rows_before or 0
    rows = _selected_rows(table, event_types)
    _, bad_column = _check_rows(_take_rows(table, rows), id_kinds)
    lines = _line_numbers(len(table), bad_rows)
    found: list[_BadRow] = list(bad_rows)
    if bad_column.any():
        first = int(np.flatnonzero(bad_column)[0])
        local = int(rows[first])
        column = REQUIRED_COLUMNS[bad_column[first] - 1]
        raw = table.column(column)[local].as_py()
        problem = "missing value" if raw is None else "a line break in a quoted value" if "\n" in str(raw) else "not an integer"
        found.append(_BadRow(int(lines[local]), column, f"{problem}; fix the row or pass --on-bad-rows skip.", raw))
    worst = min(found, key=lambda bad: bad.line)
    raise InputError(
        worst.message,
        path=block.file.url,
        row=rows_before + worst.line,
        column=None if worst.cause == "fields" else worst.cause,
        value=worst.value,
    )


@dataclass(frozen=True)
class _BadRow:
    """A row of a CSV block that could not be parsed: its line in the block (1-based), what is
    wrong (a column, or ``fields``), the message and the text shown."""

    line: int
    cause: str
    message: str
    value: object
    lines: int = 1
    """Lines of the file the row spans (more than one after an unclosed quote); each counts as a
    skipped row."""


def _line_numbers(n_rows: int, bad_rows: Sequence[_BadRow]) -> np.ndarray:
    """The line (1-based, within the block) of each parsed row, the unparsed rows' lines left out."""
    lines = np.arange(1, n_rows + 1, dtype=np.int64)
    for bad in sorted(bad_rows, key=lambda bad: bad.line):
        lines[lines >= bad.line] += bad.lines
    return lines


def _shown(text: str | bytes) -> str:
    """A bad row's text as a message shows it: bytes escaped, long text cut."""
    shown = text if isinstance(text, str) else text.decode("utf-8", errors="backslashreplace")
    return shown if len(shown) <= _SHOWN_CHARS else shown[:_SHOWN_CHARS] + "..."


def _rows_before(block: _Block) -> int:
    """Data rows of the block's file before the block (only computed to report a bad row)."""
    if block.offset == 0:
        return 0
    with fsspec.open(block.file.url, "rb") as handle:
        prefix = read_block(handle, 0, block.offset, delimiter=b"\n")
    newlines = prefix.count(b"\n")
    return int(newlines) - 1  # the header line


def _parse_csv(data: bytes, header: tuple[str, ...], id_kinds: IdKinds) -> tuple[pa.Table, list[_BadRow]]:
    """Typed parse; on a conversion error, a text parse that :func:`_check_rows` checks row by
    row; on text that is not UTF-8, a parse of bytes whose invalid rows are set aside. Rows that
    cannot be split into the header's fields are set aside too: they come back as bad rows."""
    bad_rows: list[_BadRow] = []

    def set_aside(row: pacsv.InvalidRow) -> str:
        lines = row.text.count("\n") + 1  # an unclosed quote runs on over the lines after it
        if row.text.count('"') % 2 or lines > 1:
            problem = "an unclosed quote" + (f" (its value runs over {lines} lines)" if lines > 1 else "")
        else:
            problem = f"{row.actual_columns} fields where the header has {row.expected_columns}"
        message = f"{problem}; fix the row or pass --on-bad-rows skip."
        bad_rows.append(_BadRow(row.number or 0, "fields", message, _shown(row.text.split("\n", 1)[0]), lines))
        return "skip"

    def parse(types: dict[str, pa.DataType]) -> pa.Table:
        bad_rows.clear()
        return pacsv.read_csv(
            pa.BufferReader(data),  # zero-copy, and read without the GIL (a Python file object needs it)
            read_options=pacsv.ReadOptions(column_names=list(header), use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=set_aside),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=list(REQUIRED_COLUMNS), strings_can_be_null=True
            ),
        )

    id_type = {"int": pa.int64(), "str": pa.string()}
    typed = {
        "timestamp": pa.int64(),
        "event": pa.dictionary(pa.int32(), pa.string()),
        "visitorid": id_type[id_kinds.visitorid],
        "itemid": id_type[id_kinds.itemid],
    }
    for types in (typed, dict.fromkeys(REQUIRED_COLUMNS, pa.string())):
        try:
            return parse(types), bad_rows
        except pa.ArrowInvalid:
            continue
    return _valid_text(parse(dict.fromkeys(REQUIRED_COLUMNS, pa.binary())), bad_rows)


def _valid_text(table: pa.Table, bad_rows: list[_BadRow]) -> tuple[pa.Table, list[_BadRow]]:
    """A table of bytes as text, its rows with invalid UTF-8 set aside as bad rows."""
    invalid = np.zeros(len(table), dtype=bool)
    lines = _line_numbers(len(table), bad_rows)
    found: list[_BadRow] = []
    for name in REQUIRED_COLUMNS:
        for row, value in enumerate(table.column(name).to_pylist()):
            if value is None or invalid[row]:
                continue
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                invalid[row] = True
                message = "not valid UTF-8 text; re-encode the file as UTF-8 or pass --on-bad-rows skip."
                found.append(_BadRow(int(lines[row]), name, message, _shown(value)))
    kept = table.filter(pa.array(~invalid)).cast(pa.schema([(name, pa.string()) for name in table.column_names]))
    return kept, sorted([*bad_rows, *found], key=lambda bad: bad.line)


def _read_parquet_group(block: _Block, event_types: tuple[str, ...] | None) -> pa.Table:
    """One row group, with the event filter pushed into the reader (row-group statistics and
    dictionary pages let it skip what does not match)."""
    fs, path = fsspec.core.url_to_fs(block.file.url)
    fragment = next(iter(pads.dataset(path, filesystem=fs, format="parquet").get_fragments()))
    group = fragment.subset(row_group_ids=[block.row_group])
    if event_types is None:
        return group.to_table(columns=list(REQUIRED_COLUMNS))
    return group.to_table(columns=list(REQUIRED_COLUMNS), filter=pc.field("event").isin(list(event_types)))


def _has_line_break(column: pa.Array) -> np.ndarray:
    """Which values of a text column hold a line break: a quoted value that ran over lines, never
    an id (CSV blocks are cut at line breaks, so such values cannot be read reliably)."""
    return np.asarray(pc.fill_null(pc.match_substring(column, "\n"), False), dtype=bool)


def _typed_column(column: pa.ChunkedArray, name: str, id_kinds: IdKinds) -> tuple[np.ndarray | pd.Series, np.ndarray]:
    """The column as int64 (timestamps, integer ids) or strings, and which of its rows are malformed."""
    kind: str = "int" if name == "timestamp" else getattr(id_kinds, name)
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.timestamp("ms")).cast(pa.int64())
    missing = np.asarray(column.is_null(), dtype=bool) if column.null_count else np.zeros(len(column), dtype=bool)
    if kind == "str":
        text = column.cast(pa.string())
        filled = pc.fill_null(text, "")
        return pd.Series(filled.to_numpy(zero_copy_only=False), dtype="str"), missing | _has_line_break(text)
    if pa.types.is_integer(column.type):
        filled = pc.fill_null(column, 0) if column.null_count else column  # without a copy when full
        integers: np.ndarray = np.asarray(filled.cast(pa.int64()), dtype=np.int64)
        return integers, missing
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return np.zeros(len(column), dtype=np.int64), np.ones(len(column), dtype=bool)
    well_formed = np.asarray(pc.fill_null(pc.match_substring_regex(column, _INT_PATTERN), False), dtype=bool)
    if name != "timestamp" and not np.all(well_formed | missing):
        raise StringIdsFound(name)
    cleaned = pc.if_else(pa.array(well_formed), pc.utf8_trim_whitespace(column), pa.scalar("0"))
    values = np.asarray(pc.cast(cleaned, pa.int64()), dtype=np.int64)
    return values, ~well_formed


def _empty_frame(id_kinds: IdKinds) -> pd.DataFrame:
    id_dtype = {"int": "int64", "str": "str"}
    dtypes = {
        "visitorid": id_dtype[id_kinds.visitorid],
        "itemid": id_dtype[id_kinds.itemid],
        "timestamp": "int64",
        "position": "int64",
        "matrix": "int8",
        "bad_column": "int8",
    }
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in dtypes.items()})


# ------------------------------------------------------------------------------ pure: recent rows


def keep_recent(frame: pd.DataFrame, recent: int) -> pd.DataFrame:
    """Each visitor's ``recent`` most recent rows: latest timestamp first, later position winning ties.

    Parameters
    ----------
    frame
        Rows with ``visitorid``, ``itemid``, ``timestamp`` and ``position`` holding *all* rows of
        the visitors it contains (rows are routed by visitor before this is called). Without
        ``position`` the rows are taken to be in input order.
    recent
        Rows kept per visitor.

    Returns
    -------
    pandas.DataFrame
        ``user`` (visitor number within this frame, 0..users-1), ``visitorid``, ``itemid`` and
        ``timestamp`` (and ``matrix``, when given: then each visitor keeps ``recent`` rows per
        matrix) of the kept rows, in position order. Kept rows followed by later rows give the
        same result as all rows would: :func:`daskrec.pipeline.update_build` relies on it.

    Examples
    --------
    >>> frame = pd.DataFrame({"visitorid": [7, 7, 7], "itemid": [1, 2, 3],
    ...                       "timestamp": [5, 9, 5], "position": [0, 1, 2]})
    >>> keep_recent(frame, 2)["itemid"].tolist()
    [2, 3]
    """
    position = frame["position"].to_numpy() if "position" in frame.columns else np.arange(0)
    if len(position) > 1 and not np.all(position[1:] > position[:-1]):
        frame = frame.iloc[np.argsort(position, kind="stable")]
    # Visitors are numbered by their last row, as the reversed rows first meet them.
    keys = _id_keys(frame["visitorid"])
    user = np.ascontiguousarray(_numbered(np.ascontiguousarray(keys[::-1]), np.empty(0, dtype=np.int64))[0][::-1])
    # With cross-occurrence types each (visitor, matrix) keeps its own recent rows.
    columns = ["visitorid", "itemid", "timestamp", *(["matrix"] if "matrix" in frame.columns else [])]
    group = user
    if "matrix" in frame.columns and len(frame):
        matrix = frame["matrix"].to_numpy().astype(np.int64)
        lowest = int(matrix.min())
        group = user * (int(matrix.max()) - lowest + 1) + (matrix - lowest)
    kept = np.flatnonzero(_most_recent(group, frame["timestamp"].to_numpy(), recent))
    # Column by column, into a frame that does not copy them again into one block.
    taken = {name: frame[name].array.take(kept) for name in columns}
    return pd.DataFrame({"user": user[kept], **taken}, copy=False)


def latest_pairs(rows: pd.DataFrame) -> pd.DataFrame:
    """The distinct (``visitorid``, ``itemid``) pairs of ``rows``, each with its latest
    ``timestamp``, in the order of their first rows.

    Examples
    --------
    >>> rows = pd.DataFrame({"visitorid": [1, 2, 1], "itemid": [5, 5, 5], "timestamp": [3, 4, 9]})
    >>> latest_pairs(rows).values.tolist()
    [[1, 5, 9], [2, 5, 4]]
    """
    pair, first_rows = _numbered(_id_keys(rows["visitorid"]), _id_keys(rows["itemid"]))
    latest = _largest_per_number(pair, rows["timestamp"].to_numpy(), len(first_rows))
    pairs: pd.DataFrame = rows[["visitorid", "itemid"]].iloc[first_rows].reset_index(drop=True)
    pairs["timestamp"] = latest
    return pairs


def by_visitor_bucket(rows: pa.Table, n_buckets: int) -> tuple[pa.Table, np.ndarray]:
    """``rows`` grouped by their visitor's bucket (a hash of the ``visitorid`` modulo
    ``n_buckets``), each bucket's rows in their order; and where each bucket's rows start and
    the last ends (``n_buckets + 1`` bounds).

    Examples
    --------
    >>> rows = pa.table({"visitorid": [1, 2, 9, 3], "itemid": [10, 20, 90, 30]})
    >>> grouped, bounds = by_visitor_bucket(rows, 2)
    >>> grouped.column("itemid").to_pylist(), bounds.tolist()
    ([20, 30, 10, 90], [0, 2, 4])
    """
    visitors = rows.column("visitorid").to_pandas()
    hashes = pd.util.hash_pandas_object(visitors, index=False).to_numpy()
    bucket = (hashes % np.uint64(n_buckets)).astype(np.int64)
    destination, bounds = _bucket_destinations(bucket, n_buckets)
    # Each row is written to its place (a counting sort) rather than each place read from its
    # row: writes go to one stream per bucket, reads of a permutation go anywhere (numbers:
    # ~7 against ~35 ms a column of 2M int64 here).
    columns = {}
    for name, column in zip(rows.column_names, rows.columns):
        if pa.types.is_integer(column.type) and column.null_count == 0:
            values = column.to_numpy()
            placed = np.empty_like(values)
            placed[destination] = values
            columns[name] = pa.array(placed)
        else:
            order = np.empty_like(destination)
            order[destination] = np.arange(len(destination))
            columns[name] = column.take(pa.array(order))
    return pa.table(columns), bounds


@numba.njit(nogil=True, cache=True)
def _bucket_destinations(bucket: np.ndarray, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each row goes when rows are grouped by bucket, in order within a bucket; and the
    buckets' bounds."""
    bounds = np.zeros(n_buckets + 1, dtype=np.int64)
    for b in bucket:
        bounds[b + 1] += 1
    for b in range(n_buckets):
        bounds[b + 1] += bounds[b]
    cursor = bounds[:-1].copy()
    destination = np.empty(len(bucket), dtype=np.int64)
    for row in range(len(bucket)):
        destination[row] = cursor[bucket[row]]
        cursor[bucket[row]] += 1
    return destination, bounds


def _id_keys(ids: pd.Series) -> np.ndarray:
    """int64 keys equal exactly when the ids are: integer ids as they are, text ids numbered."""
    if pd.api.types.is_integer_dtype(ids.dtype):
        return ids.to_numpy(dtype=np.int64)
    return pd.factorize(ids.to_numpy())[0].astype(np.int64)


# Rows are numbered by key with a hash table of our own rather than pandas.factorize and groupby:
# one compiled pass numbers visitors, and (visitor, item) pairs without building them. On a 2M-row
# bucket of the 10M log (90k visitors) it took 0.45–0.8x factorize's time; on its 671k trending
# rows (530k distinct pairs) 0.8x the groupby's (README, "The ingest, compiled").
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xC2B2AE3D27D4EB4F)
_FIRST_SLOTS_BITS = 10
_PROBE_BATCH = 64


@numba.njit(nogil=True, cache=True)
def _numbered(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number each row by its key (``first[r]``, and ``second[r]`` when ``second`` is not empty)
    in order of first appearance; return the numbers and each number's first row."""
    n_rows = len(first)
    paired = len(second) > 0
    bits = _FIRST_SLOTS_BITS
    while (1 << bits) < 2 * min(n_rows, 1 << 16):
        bits += 1
    # Each slot holds a number (-1: empty) beside its key, so that a probe reads one place.
    table = np.full((1 << bits, 3), -1, dtype=np.int64)
    first_rows = np.empty(max(n_rows, 1), dtype=np.int64)
    numbers = np.empty(n_rows, dtype=np.int64)
    home = np.empty(_PROBE_BATCH, dtype=np.int64)
    found = 0
    for batch in range(0, n_rows, _PROBE_BATCH):
        size = min(_PROBE_BATCH, n_rows - batch)
        if 2 * (found + size) >= len(table):  # keep the table at most half full
            bits += 1
            grown = np.full((1 << bits, 3), -1, dtype=np.int64)
            for slot in range(len(table)):
                if table[slot, 0] >= 0:
                    a, b = table[slot, 1], table[slot, 2]
                    _entered(grown, _slot(a, b, bits), a, b, table[slot, 0])
            table = grown
        # The batch's home slots are hashed first, in a loop without branches; entering the rows
        # then probes from them (on a 2M-row bucket: 0.45–0.8x pandas.factorize's time, against
        # 0.9–1.0x hashing and probing row by row).
        for i in range(size):
            home[i] = _slot(first[batch + i], second[batch + i] if paired else 0, bits)
        for i in range(size):
            row = batch + i
            number = _entered(table, home[i], first[row], second[row] if paired else 0, found)
            numbers[row] = number
            if number == found:
                first_rows[found] = row
                found += 1
    return numbers, first_rows[:found].copy()


@numba.njit(nogil=True, cache=True)
def _entered(table: np.ndarray, slot: int, a: int, b: int, number: int) -> int:
    """The number of key (a, b) in ``table`` (rows: number, a, b) probed from its home ``slot``,
    entered as ``number`` if new."""
    mask = len(table) - 1
    while table[slot, 0] >= 0:
        if table[slot, 1] == a and table[slot, 2] == b:
            return int(table[slot, 0])
        slot = (slot + 1) & mask
    table[slot, 0], table[slot, 1], table[slot, 2] = number, a, b
    return number


@numba.njit(nogil=True, cache=True)
def _slot(a: int, b: int, bits: int) -> int:
    """The home slot of a key in a table of ``2**bits`` slots (Fibonacci hashing)."""
    mixed = np.uint64(a) * _GOLDEN
    mixed ^= np.uint64(b) * _MIX
    mixed ^= mixed >> np.uint64(29)
    mixed *= _GOLDEN
    return int(np.int64(mixed >> np.uint64(64 - bits)))


@numba.njit(nogil=True, cache=True)
def _largest_per_number(numbers: np.ndarray, values: np.ndarray, n_numbers: int) -> np.ndarray:
    """The largest value of each number's rows."""
    largest = np.full(n_numbers, np.iinfo(np.int64).min, dtype=np.int64)
    for row in range(len(numbers)):
        largest[numbers[row]] = max(largest[numbers[row]], values[row])
    return largest


@numba.njit(nogil=True, cache=True)
def _most_recent(group: np.ndarray, timestamp: np.ndarray, recent: int) -> np.ndarray:
    """Which rows (in position order) are among the ``recent`` latest of their group: latest
    timestamp first, the later row winning ties. Only groups with more rows are ranked."""
    n_rows = len(group)
    keep = np.ones(n_rows, dtype=np.bool_)
    if n_rows == 0:
        return keep
    destination, bounds = _bucket_destinations(group, group.max() + 1)
    if np.max(bounds[1:] - bounds[:-1]) <= recent:
        return keep
    by_group = np.empty(n_rows, dtype=np.int64)  # each group's rows, in position order
    for row in range(n_rows):
        by_group[destination[row]] = row
    for g in range(len(bounds) - 1):
        if bounds[g + 1] - bounds[g] <= recent:
            continue
        rows = by_group[bounds[g] : bounds[g + 1]][::-1]  # latest position first
        in_time_order = True
        for r in range(1, len(rows)):
            in_time_order &= timestamp[rows[r]] <= timestamp[rows[r - 1]]
        if in_time_order:  # as logs are written: the latest rows are the last ones
            for r in rows[recent:]:
                keep[r] = False
            continue
        # A stable sort by timestamp descending keeps the later of two equal timestamps first.
        order = np.argsort(-timestamp[rows], kind="mergesort")
        for r in order[recent:]:
            keep[rows[r]] = False
    return keep
