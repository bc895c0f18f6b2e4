"""A build's intermediate files: what lets it run in less memory than its data (I/O only).

A build keeps its large intermediates in a scratch folder, a path or fsspec URL that every
worker can reach, instead of in worker memory: each task holds one partition, one bucket of
visitors or one block of item rows at a time. The folder is removed when the build ends, failed
or not.

``routed/part-P.arrow``
    Partition P's rows in one Arrow IPC record batch per visitor bucket, so that bucket B reads
    batch B of every partition.
``kept/bucket-B.arrow``
    Bucket B's visitors' most recent rows (``user``, ``visitorid``, ``itemid``, ``timestamp``,
    ``matrix``), in input order.
``trending/bucket-B.arrow``
    Their distinct (visitor, item) primary pairs in the trending window, with the latest
    timestamp of each. These and the kept rows outlive a build that writes to a folder: they
    become its ``state/<generation>/`` (see :func:`daskrec.pipeline.update_build`).
``occurrences/raw-B.arrays``, ``occurrences/final-B.arrays``
    Bucket B's occurrence matrix (users x all items) as scored (counts for the SPEC's table,
    binarised for Mahout's) in both layouts (CSR, and CSC for whoever stacks every bucket's or
    looks up an item block's users in it); when downsampling, raw holds the counts and the users'
    keys and final the scored matrix. When the item blocks do not share one copy of the matrix,
    each block reads its users' rows from every bucket's file, memory-mapped
    (:func:`map_layouts`).
``spill/block-K.arrow``
    Item block K's candidates for indicators, when the blocks do not share the occurrence
    matrix: group 0 its own rows' best, then group G the candidates of block K + G's rows from
    their pairs with block K's (:func:`daskrec.indicators.pair_block`).
``parts/part-K.parquet``, ``parts/part-K.arrow``
    The indicators of item block K, in the output table's columns, as Arrow IPC; a single part
    holds the whole table, as Parquet in the output's encoding (moved into place, not copied).
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem
import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from .cooccurrence import Layouts
from .output import replacing, write_slices

__all__ = [
    "scratch_folder",
    "write_routed",
    "read_routed",
    "write_frame",
    "read_frame",
    "write_block",
    "read_block",
    "map_layouts",
    "read_sizes",
    "write_groups",
    "read_group",
    "write_part",
]


@contextmanager
def scratch_folder(url: str | None) -> Iterator[str]:
    """A scratch folder for the duration of a build: ``url``, or a new local temporary folder.

    Whatever is in it is removed on the way out, also after an error.
    """
    if url is None:
        local = tempfile.mkdtemp(prefix="daskrec-scratch-")
        try:
            yield local
        finally:
            shutil.rmtree(local, ignore_errors=True)
        return
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(root, exist_ok=True)
    try:
        yield url.rstrip("/")
    finally:
        if fs.exists(root):
            fs.rm(root, recursive=True)


def write_routed(url: str, table: pa.Table, bounds: np.ndarray) -> None:
    """Write ``table`` (rows sorted by bucket) with rows ``bounds[b]:bounds[b+1]`` as batch ``b``."""
    chunks = table.combine_chunks().to_batches()
    rows = chunks[0] if chunks else pa.RecordBatch.from_pylist([], schema=table.schema)
    with replacing(url) as f, pa.ipc.new_file(f, table.schema) as writer:
        for bucket in range(len(bounds) - 1):
            writer.write_batch(rows.slice(bounds[bucket], bounds[bucket + 1] - bounds[bucket]))


def read_routed(urls: list[str], bucket: int) -> pd.DataFrame:
    """Batch ``bucket`` of each file written by :func:`write_routed`, one after the other.

    The batches are joined as Arrow and converted once: converting each and joining the frames
    took ~1.8 s of a 50M-event build's tasks, a fifth of its recent-rows stage. Local files are
    memory-mapped, so the conversion copies the batches straight from the page cache: reading
    them first copied each into fresh buffers (eight buckets of the 50M-event log, fresh
    processes, four alternating rounds: 0.48–0.72 s read, 0.12–0.24 s mapped)."""
    batches = []
    for url in urls:
        fs, path = fsspec.core.url_to_fs(url)
        with pa.memory_map(path) if isinstance(fs, LocalFileSystem) else fs.open(path, "rb") as source:
            batches.append(pa.ipc.open_file(source).get_batch(bucket))  # a mapped batch outlives its file object
    frame: pd.DataFrame = pa.Table.from_batches(batches).to_pandas()
    return frame


def write_frame(url: str, frame: pd.DataFrame) -> None:
    """Write a frame as one Arrow IPC file."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with replacing(url) as f, pa.ipc.new_file(f, table.schema) as writer:
        writer.write_table(table)


def read_frame(url: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read (some columns of) a file written by :func:`write_frame`."""
    with fsspec.open(url, "rb") as f:
        table = pa.ipc.open_file(f).read_all()
    frame: pd.DataFrame = (table if columns is None else table.select(columns)).to_pandas()
    return frame


def write_block(url: str, block: sp.csr_array, user_keys: np.ndarray | None = None, by_item: sp.csc_array | None = None) -> None:
    """Write an occurrence block (its users' keys, and the same matrix in item layout, if given)
    uncompressed: it is read once per item block. Items, users and counts are stored as int32
    when they fit (counts are at most the recent rows per visitor), so that the item layout
    costs the scratch disk little more than the int64 items it replaced: read back, the rows
    have int64 items (scipy widens them beside the int64 row pointers), as written before."""
    arrays: dict[str, np.ndarray] = {
        "shape": np.asarray(block.shape, np.int64),
        "indptr": block.indptr,
        "indices": _narrow(block.indices),
        "data": _narrow(block.data),
    }
    if user_keys is not None:
        arrays["user_keys"] = user_keys
    if by_item is not None:
        arrays |= {"item_indptr": _narrow(by_item.indptr), "item_users": _narrow(by_item.indices), "item_data": _narrow(by_item.data)}
    with replacing(url) as f:
        _write_arrays(f, arrays)


def _narrow(values: np.ndarray) -> np.ndarray:
    """``values`` as int32 when they fit, else as they are."""
    fits = len(values) == 0 or (int(values.min()) >= np.iinfo(np.int32).min and int(values.max()) <= np.iinfo(np.int32).max)
    return values.astype(np.int32) if fits else values


def read_block(url: str) -> tuple[sp.csr_array, np.ndarray | None]:
    """An occurrence block and its user keys (None if none were written); its item layout, if
    written, is skipped."""
    stored = _read_arrays(url, {"shape", "indptr", "indices", "data", "user_keys"})
    return _by_user(stored), stored.get("user_keys")


def read_sizes(url: str) -> tuple[int, np.ndarray]:
    """The users and the entries per item column of a block written with its item layout."""
    stored = _read_arrays(url, {"shape", "item_indptr"})
    return int(stored["shape"][0]), np.diff(stored["item_indptr"]).astype(np.int64)


def map_layouts(url: str) -> Layouts:
    """An occurrence block written with its item layout: the arrays of its rows and of its
    columns, and its shape; memory-mapped when the file is local (read whole otherwise), for a
    reader that needs a little of each of many blocks (an item block's users and their rows,
    :func:`~daskrec.cooccurrence.item_rows`) or that copies all of it once
    (:func:`~daskrec.cooccurrence.stack_occurrences`). Only the pages it reads are brought in, from the
    page cache; the mapping goes when the arrays do, so drop them as soon as they are read. No
    sparse array is made of them: scipy's checks of the pointers touched every page of them
    (~0.6 ms a block, 3 s of a 100M-event build's tasks).

    Why not read the parts needed by offset: an item block's users are spread over the whole
    block file, so reads by range would be one per user; and not a split written once per item
    block (as builds did up to 2026-12-01): that wrote 5.8 GB for the 100M-event benchmark, and
    writing files costs this VM ~1 s of a core per GB, more than reading mapped pages does."""
    fs, path = fsspec.core.url_to_fs(url)
    if isinstance(fs, LocalFileSystem):
        written = os.stat(path)
        whole = np.memmap(path, dtype=np.uint8, mode="r")
        stored = {
            name: whole[offset : offset + math.prod(shape) * dtype.itemsize].view(dtype).reshape(shape)
            for name, (shape, dtype, offset) in _local_places(path, written.st_size, written.st_mtime_ns).items()
        }
    else:
        stored = _read_arrays(url)
    n_users, n_items = (int(n) for n in stored["shape"])
    return (
        (stored["indptr"], stored["indices"], stored["data"]),
        (stored["item_indptr"], stored["item_users"], stored["item_data"]),
        (n_users, n_items),
    )


@functools.lru_cache(maxsize=4096)
def _local_places(path: str, size: int, modified_ns: int) -> dict[str, tuple[tuple[int, ...], np.dtype, int]]:
    """:func:`_array_places` of a local file, remembered by its size and time of writing (a block
    file is written once, then renamed into place): an item block maps every bucket's file twice,
    and parsing the headers again each time took 1.5 s of a 100M-event build's tasks."""
    del size, modified_ns  # part of the key only
    with open(path, "rb") as f:
        return _array_places(path, f)


def _by_user(stored: dict[str, np.ndarray]) -> sp.csr_array:
    """The rows of a block file's arrays."""
    n_users, n_items = (int(n) for n in stored["shape"])
    return sp.csr_array((stored["data"], stored["indices"], stored["indptr"]), shape=(n_users, n_items))


# A block file is its arrays' names (a JSON list, after its length as 8 little-endian bytes), then
# each array in the .npy format, in that order, each starting at a multiple of _ALIGNMENT bytes
# (zeros before it), so that a memory-mapped array is aligned to its type (.npy pads its header
# to 64 bytes). Not an .npz: a zip computes a CRC of every member on both ends (26 blocks the size
# of a 50M-event build's: read back in 0.35 s as .npz, 0.19 s so; written in 0.79–0.85 s,
# 0.63–0.72 s so), and a task that dies mid-write leaves no file (see replacing), so there is
# nothing for a checksum to find.
_NAMES_LENGTH = 8
_ALIGNMENT = 64


def _write_arrays(f: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    """Write named 1-d arrays to ``f`` (the layout above)."""
    names = json.dumps(list(arrays)).encode()
    f.write(len(names).to_bytes(_NAMES_LENGTH, "little") + names)
    for values in arrays.values():
        f.write(bytes(-f.tell() % _ALIGNMENT))
        np.lib.format.write_array(f, np.ascontiguousarray(values), allow_pickle=False)


def _read_arrays(url: str, wanted: set[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of a file written by :func:`_write_arrays` (only those ``wanted``, if given:
    the others are skipped, not read)."""
    arrays = {}
    with fsspec.open(url, "rb") as f:
        for name, (shape, dtype, offset) in _array_places(url, f).items():
            if wanted is None or name in wanted:
                f.seek(offset)
                arrays[name] = np.empty(shape, dtype=dtype)
                f.readinto(arrays[name].view(np.uint8))  # all there: _array_places checked the size
    return arrays


def _array_places(url: str, f: IO[bytes]) -> dict[str, tuple[tuple[int, ...], np.dtype, int]]:
    """Each array's shape, type and offset in ``f`` (``url`` opened), a file written by
    :func:`_write_arrays`, from its headers alone; ``OSError`` if it is cut short or damaged."""
    size = f.seek(0, io.SEEK_END)
    f.seek(0)
    names = json.loads(f.read(int.from_bytes(f.read(_NAMES_LENGTH), "little")))
    places = {}
    for name in names:
        damaged = OSError(f"{url}: the block file is cut short or damaged in its array {name!r}")
        f.seek(-f.tell() % _ALIGNMENT, io.SEEK_CUR)
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
        except ValueError as error:  # numpy's word for a file that ends too soon, or a bad header
            raise damaged from error
        places[name] = (shape, dtype, f.tell())
        if f.seek(math.prod(shape) * dtype.itemsize, io.SEEK_CUR) > size:
            raise damaged
    return places


def _write_batches(url: str, batches: Iterable[pa.RecordBatch]) -> None:
    """Write record batches of one schema to ``url`` as one Arrow IPC file (none: an empty file)."""
    with replacing(url) as f:
        writer: pa.ipc.RecordBatchFileWriter | None = None
        for batch in batches:
            if writer is None:
                writer = pa.ipc.new_file(f, batch.schema)
            writer.write_batch(batch)
        if writer is not None:
            writer.close()


def write_groups(url: str, groups: Iterable[dict[str, np.ndarray]]) -> None:
    """Write groups of equal-length named columns (the same names and types in every group), one
    Arrow IPC record batch a group, so that a reader reads only its own (:func:`read_group`)."""
    _write_batches(url, (pa.record_batch(group) for group in groups))


def read_group(url: str, group: int) -> dict[str, np.ndarray]:
    """Group ``group`` of a file written by :func:`write_groups`."""
    with fsspec.open(url, "rb") as f:
        batch = pa.ipc.open_file(f).get_batch(group)
    return {name: column.to_numpy() for name, column in zip(batch.schema.names, batch.columns)}


def write_part(url: str, slices: Iterable[pa.Table], *, whole: bool = False) -> None:
    """Write consecutive slices of the indicators table as one item block's part of it; when the
    part is the ``whole`` table, in the output's own layout (:func:`~daskrec.output.write_slices`),
    so that it is moved into place rather than copied (a 50M-event build's table took ~3 s to
    copy)."""
    with replacing(url) as f:
        if whole:
            write_slices(f, slices)
            return
        # Read once and encoded again for the output, so written the cheapest way measured: as
        # Arrow IPC, not encoded at all (a part of 10k rows of 50 indicators: 1–4 ms to write and
        # 1–4 ms to read, against 11–12 ms and 6 ms as lz4 Parquet without dictionaries, itself
        # 4x cheaper than Parquet's defaults).
        table = pa.concat_tables(slices)
        with pa.ipc.new_file(f, table.schema) as writer:
            writer.write_table(table)
