"""Incremental update against a full build of the combined log, in the same run.

For each update fraction f the seeded log is cut by its rows into a base (the first 1 - f) and an
update (the last f, in input order: the latest events), both CSV with the header. The base is
built once (``daskrec build``, not timed against anything), then, timed as whole processes with
the peak resident memory of their process trees:

* ``daskrec update UPDATE --build BASE`` (on a copy of the base build, so each fraction starts
  from the same folder), and
* ``daskrec build BASE UPDATE`` (the full build of the combined log);

and their ``indicators.parquet`` are compared (same lists, scores within 1e-9 relative). Each
row reports the update's stage timings from its manifest (where the time goes), and how much of
the base build's table the update changed: documents with any other content, items whose set of
indicators (or of its ten best) is another.

    python bench/bench_update.py --events 50000000 --fractions 0.01,0.1 --json bench/results/update-50M.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from measure import HERE, events_file, outputs_match, report, run_measured

DASKREC = [sys.executable, "-m", "daskrec"]
_OPTIONS = ["--event", "all", "--no-progress"]


def split_log(source: Path, fraction: float, folder: Path) -> tuple[Path, Path]:
    """``source`` cut at the first line break after ``1 - fraction`` of its bytes (about that share
    of its rows: the generated log's lines are of similar length) into a base and an update file,
    each with the header."""
    base, update = folder / "base.csv", folder / "update.csv"
    size = source.stat().st_size
    with source.open("rb") as f:
        header = f.readline()
        f.seek(int(size * (1 - fraction)))
        f.readline()  # to the end of the line the cut falls in
        cut = f.tell()
        f.seek(0)
        with base.open("wb") as out:
            _copy(f, out, cut)
        with update.open("wb") as out:
            out.write(header)
            shutil.copyfileobj(f, out, 2**24)
    return base, update


def _copy(source: object, sink: object, n_bytes: int) -> None:
    """The next ``n_bytes`` of ``source`` into ``sink``, in 16 MB pieces."""
    while n_bytes:
        piece = source.read(min(n_bytes, 2**24))  # type: ignore[attr-defined]
        sink.write(piece)  # type: ignore[attr-defined]
        n_bytes -= len(piece)


def changed_rows(before: Path, after: Path) -> dict[str, int]:
    """Items added, removed, and kept with other content (any column), from one table to the next:
    the documents an index of ``before`` would have to change."""
    old, new = pq.read_table(before), pq.read_table(after)
    old_items = pd.Index(old.column("item").to_numpy())
    position = old_items.get_indexer(pd.Index(new.column("item").to_numpy()))
    in_both = np.flatnonzero(position >= 0)
    differs = np.zeros(len(in_both), dtype=bool)
    for name in old.column_names:
        if name == "item":
            continue
        a = old.column(name).combine_chunks().take(pa.array(position[in_both]))
        b = new.column(name).combine_chunks().take(pa.array(in_both))
        if not pa.types.is_list(a.type):
            differs |= a.to_numpy(zero_copy_only=False) != b.to_numpy(zero_copy_only=False)
            continue
        lengths_a = pc.list_value_length(a).to_numpy(zero_copy_only=False)
        differs |= lengths_a != pc.list_value_length(b).to_numpy(zero_copy_only=False)
        same_length = pa.array(np.flatnonzero(~differs))
        rows = pc.list_parent_indices(a.take(same_length)).to_numpy(zero_copy_only=False)
        values_a = pc.list_flatten(a.take(same_length)).to_numpy(zero_copy_only=False)
        values_b = pc.list_flatten(b.take(same_length)).to_numpy(zero_copy_only=False)
        mismatched = np.bincount(rows[values_a != values_b], minlength=len(same_length)) > 0
        differs[same_length.to_numpy()[mismatched]] = True
    return {
        "added": int(len(new) - len(in_both)),
        "removed": int(len(old) - len(in_both)),
        "changed": int(differs.sum()),
        "unchanged": int((~differs).sum()),
    }


def changed_sets(before: Path, after: Path) -> dict[str, float]:
    """Among the items of both tables, the share whose set of primary indicators differs, and the
    same for the ten best of each list: how far an update's change reaches into the lists
    themselves, whatever their scores."""
    old = pq.read_table(before).to_pandas().set_index("item")["indicators"]
    new = pq.read_table(after).to_pandas().set_index("item")["indicators"]
    common = new.index.intersection(old.index)
    pairs = list(zip(old.loc[common], new.loc[common]))
    return {
        f"{name}_sets_changed": round(float(np.mean([set(a[:n]) != set(b[:n]) for a, b in pairs])), 4)
        for name, n in (("indicator", None), ("top10", 10))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fractions", default="0.01,0.1", help="Update fractions, comma-separated.")
    parser.add_argument("--data-dir", type=Path, default=HERE / "data")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    source = events_file(args.events, args.seed, args.data_dir)
    rows = []
    for fraction in (float(f) for f in args.fractions.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-update-", dir=args.data_dir) as tmp:
            folder = Path(tmp)
            base, update = split_log(source, fraction, folder)
            base_s, base_peak = run_measured([*DASKREC, "build", str(base), "--out", str(folder / "base"), *_OPTIONS])
            shutil.copytree(folder / "base", folder / "updated")
            update_s, update_peak = run_measured([*DASKREC, "update", str(update), "--build", str(folder / "updated"), "--no-progress"])
            full_s, full_peak = run_measured([*DASKREC, "build", str(base), str(update), "--out", str(folder / "full"), *_OPTIONS])
            manifest = json.loads((folder / "updated" / "manifest.json").read_text())
            last = manifest["updates"][-1]
            rows.append(
                {
                    "events": args.events,
                    "fraction": fraction,
                    "update_s": round(update_s, 2),
                    "full_s": round(full_s, 2),
                    "ratio": round(update_s / full_s, 3),
                    "update_peak_gb": round(update_peak / 1e9, 3),
                    "full_peak_gb": round(full_peak / 1e9, 3),
                    "outputs_match": outputs_match(folder / "updated" / "indicators.parquet", folder / "full" / "indicators.parquet"),
                    "base_build_s": round(base_s, 2),
                    "base_peak_gb": round(base_peak / 1e9, 3),
                    "update_events": last["counts"]["events_read"],
                    "users_changed": last["counts"]["users_changed"],
                    "item_rows_recomputed": last["counts"]["item_rows_recomputed"],
                    "documents_changed": changed_rows(folder / "base" / "indicators.parquet", folder / "updated" / "indicators.parquet"),
                    **changed_sets(folder / "base" / "indicators.parquet", folder / "updated" / "indicators.parquet"),
                    "update_stages_s": last["timings_s"],
                    "full_stages_s": json.loads((folder / "full" / "manifest.json").read_text())["timings_s"],
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    report(rows, args.json)


if __name__ == "__main__":
    main()
