"""Write a build's output: ``indicators.parquet`` and ``manifest.json``, never half-written.

The manifest is the completion marker: it is removed first, the table is written under a
temporary name and renamed, and only then is the manifest written (also via a temporary name).
A folder without ``manifest.json`` holds no complete build.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import IO, Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from .config import BuildConfig
from .pipeline import BuildReport, build_parts

log = logging.getLogger(__name__)

__all__ = [
    "INDICATORS_FILE",
    "MANIFEST_FILE",
    "build_manifest",
    "write_build",
    "write_output",
    "read_indicators",
    "read_manifest",
    "indicators_url",
]

INDICATORS_FILE = "indicators.parquet"
ROW_GROUP_ROWS = 4096
"""Items per Parquet row group: the unit of parallel bulk indexing."""
MANIFEST_FILE = "manifest.json"


def build_manifest(inputs: Sequence[str], config: BuildConfig, report: BuildReport) -> dict[str, Any]:
    """What a build read, how it was configured, what it counted and how long it took (pure)."""
    from . import __version__

    return {
        "daskrec_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": list(inputs),
        "options": dataclasses.asdict(config),
        "item_id_type": report.item_id_type,
        "counts": report.counts,
        "timings_s": report.timings,
    }


def write_build(
    inputs: Sequence[str], out_dir: str, config: BuildConfig = BuildConfig(), *, show_progress: bool = False
) -> BuildReport:
    """Build the indicators of ``inputs`` straight into ``out_dir``, never holding the whole table.

    The build's intermediates go to a scratch folder inside ``out_dir`` (so workers of a remote
    cluster can reach it when ``out_dir`` is shared storage), removed afterwards. The table is
    assembled from the item blocks' slices one at a time, then written as :func:`write_output`
    does: atomically, manifest last.

    Parameters
    ----------
    inputs
        CSV or Parquet paths, globs or fsspec URLs.
    out_dir
        Folder to write into (a path or fsspec URL); created if missing.
    config
        The build's options.
    show_progress
        Show progress bars.

    Returns
    -------
    BuildReport
        Counts and stage timings (also in the manifest).

    Raises
    ------
    InputError
        Missing, empty or malformed input, or no events of the selected types.
    """
    from .scratch import scratch_folder

    with scratch_folder(f"{out_dir.rstrip('/')}/.scratch-{uuid.uuid4().hex[:12]}") as folder:
        report, parts = build_parts(inputs, config, folder, show_progress=show_progress)
        started = time.perf_counter()

        def manifest() -> dict[str, Any]:  # called once the table is in place
            report.timings["output"] = round(time.perf_counter() - started, 3)
            return build_manifest(inputs, config, report)

        _write_atomically(out_dir, lambda f: _concatenate(parts, f), manifest)
    log.info("output: %d items written to %s", report.counts["items"], out_dir)
    return report


def write_output(out_dir: str, table: pa.Table, manifest: dict[str, Any]) -> None:
    """Write ``table`` and ``manifest`` into ``out_dir`` (a path or fsspec URL) atomically.

    Parameters
    ----------
    out_dir
        Folder to write into; created if missing. An earlier build there is replaced.
    table
        The indicators table.
    manifest
        From :func:`build_manifest`.
    """
    _write_atomically(
        out_dir,
        lambda f: pq.write_table(table, f, compression="zstd", row_group_size=ROW_GROUP_ROWS),
        lambda: manifest,
    )
    log.info("output: %d items written to %s", table.num_rows, out_dir)


def _write_atomically(
    out_dir: str, write_table: Callable[[IO[bytes]], None], manifest: Callable[[], dict[str, Any]]
) -> None:
    """Remove the manifest, write the table under a temporary name and rename it, then write the
    manifest (also via a temporary name)."""
    fs, root = fsspec.core.url_to_fs(out_dir)
    fs.makedirs(root, exist_ok=True)
    manifest_path = f"{root}/{MANIFEST_FILE}"
    if fs.exists(manifest_path):
        fs.rm(manifest_path)
    token = uuid.uuid4().hex[:12]
    table_tmp = f"{root}/.{INDICATORS_FILE}.{token}.tmp"
    manifest_tmp = f"{root}/.{MANIFEST_FILE}.{token}.tmp"
    try:
        with fs.open(table_tmp, "wb") as f:
            write_table(f)
        fs.mv(table_tmp, f"{root}/{INDICATORS_FILE}")
        with fs.open(manifest_tmp, "w") as f:
            json.dump(manifest(), f, indent=2, default=str)
            f.write("\n")
        fs.mv(manifest_tmp, manifest_path)
    finally:
        for leftover in (table_tmp, manifest_tmp):
            if fs.exists(leftover):
                fs.rm(leftover)


def _concatenate(parts: list[str], sink: IO[bytes]) -> None:
    """Copy the slices into one table in ``sink``, in row groups of :data:`ROW_GROUP_ROWS`,
    holding one slice at a time."""
    writer: pq.ParquetWriter | None = None
    pending: list[pa.Table] = []
    pending_rows = 0
    try:
        for url in parts:
            with fsspec.open(url, "rb") as f:
                part = pq.read_table(f)
            if writer is None:
                writer = pq.ParquetWriter(sink, part.schema, compression="zstd")
            pending.append(part)
            pending_rows += part.num_rows
            if pending_rows >= ROW_GROUP_ROWS:
                rows = pa.concat_tables(pending)
                whole = rows.num_rows - rows.num_rows % ROW_GROUP_ROWS
                writer.write_table(rows.slice(0, whole), row_group_size=ROW_GROUP_ROWS)
                pending = [rows.slice(whole)]
                pending_rows = rows.num_rows - whole
        if writer is not None and pending_rows:
            writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
    finally:
        if writer is not None:
            writer.close()


def indicators_url(out_dir: str) -> str:
    """The URL of the indicators table of a complete build in ``out_dir``.

    Raises
    ------
    FileNotFoundError
        ``out_dir`` holds no complete build (no manifest).
    """
    fs, root = fsspec.core.url_to_fs(out_dir)
    if not fs.exists(f"{root}/{MANIFEST_FILE}"):
        raise FileNotFoundError(f"{out_dir} holds no complete build (no {MANIFEST_FILE}); run `daskrec build` first.")
    return f"{out_dir.rstrip('/')}/{INDICATORS_FILE}"


def read_manifest(out_dir: str) -> dict[str, Any]:
    """The manifest of a complete build in ``out_dir``.

    Raises
    ------
    FileNotFoundError
        ``out_dir`` holds no complete build.
    """
    url = indicators_url(out_dir).rsplit("/", 1)[0] + f"/{MANIFEST_FILE}"
    with fsspec.open(url, "r") as f:
        manifest: dict[str, Any] = json.load(f)
    return manifest


def read_indicators(out_dir: str) -> pa.Table:
    """The indicators table of a complete build in ``out_dir``.

    Raises
    ------
    FileNotFoundError
        ``out_dir`` holds no complete build (no manifest).
    """
    with fsspec.open(indicators_url(out_dir), "rb") as f:
        return pq.read_table(f)
