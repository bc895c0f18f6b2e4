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
import uuid
from collections.abc import Sequence
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from .config import BuildConfig
from .pipeline import BuildResult

log = logging.getLogger(__name__)

__all__ = ["INDICATORS_FILE", "MANIFEST_FILE", "build_manifest", "write_output", "read_indicators", "indicators_url"]

INDICATORS_FILE = "indicators.parquet"
ROW_GROUP_ROWS = 4096
"""Items per Parquet row group: the unit of parallel bulk indexing."""
MANIFEST_FILE = "manifest.json"


def build_manifest(inputs: Sequence[str], config: BuildConfig, result: BuildResult) -> dict[str, Any]:
    """What a build read, how it was configured, what it counted and how long it took (pure)."""
    from . import __version__

    return {
        "daskrec_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": list(inputs),
        "options": dataclasses.asdict(config),
        "item_id_type": str(result.table.schema.field("item").type),
        "counts": result.counts,
        "timings_s": result.timings,
    }


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
            pq.write_table(table, f, compression="zstd", row_group_size=ROW_GROUP_ROWS)
        fs.mv(table_tmp, f"{root}/{INDICATORS_FILE}")
        with fs.open(manifest_tmp, "w") as f:
            json.dump(manifest, f, indent=2, default=str)
            f.write("\n")
        fs.mv(manifest_tmp, manifest_path)
    finally:
        for leftover in (table_tmp, manifest_tmp):
            if fs.exists(leftover):
                fs.rm(leftover)
    log.info("output: %d items written to %s", table.num_rows, out_dir)


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


def read_indicators(out_dir: str) -> pa.Table:
    """The indicators table of a complete build in ``out_dir``.

    Raises
    ------
    FileNotFoundError
        ``out_dir`` holds no complete build (no manifest).
    """
    with fsspec.open(indicators_url(out_dir), "rb") as f:
        return pq.read_table(f)
