"""A build's intermediate files: each writer's reader gives back what was written, a rerun task
never exposes a half-written file, and the scratch folder is gone after a build, failed or not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp

from daskrec import scratch
from daskrec.output import ROW_GROUP_ROWS, read_slice, replacing, write_output


def test_routed_batches_come_back_by_bucket(tmp_path: Path) -> None:
    frame = pd.DataFrame({"visitorid": [5, 5, 7, 9], "itemid": [1, 2, 3, 4], "timestamp": [1, 2, 3, 4]})
    url = str(tmp_path / "routed" / "part-0.arrow")
    scratch.write_routed(url, pa.Table.from_pandas(frame), np.array([0, 2, 2, 4]))  # bucket 1 is empty
    assert scratch.read_routed([url], 0).equals(frame.iloc[:2].reset_index(drop=True))
    assert len(scratch.read_routed([url], 1)) == 0
    assert scratch.read_routed([url], 2).equals(frame.iloc[2:].reset_index(drop=True))
    again = str(tmp_path / "routed" / "part-1.arrow")
    scratch.write_routed(again, pa.Table.from_pandas(frame), np.array([0, 1, 3, 4]))
    both = scratch.read_routed([url, again], 2)  # a bucket's batches, in partition order
    assert both.equals(pd.concat([frame.iloc[2:], frame.iloc[3:]], ignore_index=True))
    remote = "memory://scratch/routed/part-0.arrow"  # not local: read, not mapped
    scratch.write_routed(remote, pa.Table.from_pandas(frame), np.array([0, 1, 3, 4]))
    assert scratch.read_routed([url, remote], 2).equals(both)


def test_blocks_round_trip_read_or_mapped(tmp_path: Path, rng: np.random.Generator) -> None:
    block = sp.csr_array(sp.random_array((30, 40), density=0.2, rng=rng, format="csr") * 5).astype(np.int32)
    keys = np.arange(30, dtype=np.int64) * 3
    scratch.write_block(str(tmp_path / "b.arrays"), block, keys)
    read, read_keys = scratch.read_block(str(tmp_path / "b.arrays"))
    assert (read != block).nnz == 0 and np.array_equal(read_keys, keys)
    scratch.write_block(str(tmp_path / "l.arrays"), block, by_item=sp.csc_array(block))
    n_users, column_entries = scratch.read_sizes(str(tmp_path / "l.arrays"))  # skips the other arrays
    assert n_users == 30 and np.array_equal(column_entries, np.diff(sp.csc_array(block).indptr))
    rows, columns, shape = scratch.map_layouts(str(tmp_path / "l.arrays"))  # local: memory-mapped, aligned
    assert _layouts_equal((rows, columns, shape), block)
    for values in (*rows, *columns):
        assert _mapped(values) and values.ctypes.data % values.itemsize == 0
    empty = sp.csr_array((0, 40), dtype=np.int64)
    scratch.write_block(str(tmp_path / "e.arrays"), empty, by_item=sp.csc_array(empty))
    assert _layouts_equal(scratch.map_layouts(str(tmp_path / "e.arrays")), empty)


def _layouts_equal(layouts: tuple[scratch.Compressed, scratch.Compressed, tuple[int, int]], block: sp.csr_array) -> bool:
    """Whether ``layouts`` (:func:`scratch.map_layouts`) are ``block``'s rows and columns."""
    rows, columns, shape = layouts
    return (shape == block.shape and (sp.csr_array(rows[::-1], shape=shape) != block).nnz == 0
            and (sp.csc_array(columns[::-1], shape=shape) != block).nnz == 0)


def _mapped(values: np.ndarray) -> bool:
    """Whether ``values`` are a view of a memory-mapped file."""
    base: object = values
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap):
            return True
        base = base.base
    return False


def test_a_failed_write_leaves_neither_a_file_nor_a_temporary(tmp_path: Path) -> None:
    target = tmp_path / "parts" / "part-0.arrow"
    scratch.write_part(str(target), [pa.table({"item": [1]})])
    with pytest.raises(OSError, match="disk full"), replacing(str(target)) as f:
        f.write(b"half")
        raise OSError("disk full")
    assert sorted(p.name for p in target.parent.iterdir()) == ["part-0.arrow"]  # the old file, untouched
    assert read_slice(str(target)).column("item").to_pylist() == [1]


def test_the_scratch_folder_goes_away_after_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), scratch.scratch_folder(str(tmp_path / "scratch")) as folder:
        scratch.write_frame(f"{folder}/kept/bucket-0.arrow", pd.DataFrame({"user": [0]}))
        raise RuntimeError("a task failed")
    assert not (tmp_path / "scratch").exists()
    with scratch.scratch_folder(None) as local:
        assert Path(local).is_dir()
    assert not Path(local).exists()


def test_a_whole_part_is_written_as_the_output_and_moved_into_place(tmp_path: Path) -> None:
    slices = [pa.table({"item": list(range(start, start + 3000))}) for start in (0, 3000, 6000)]
    part = tmp_path / "scratch" / "parts" / "part-0.parquet"
    scratch.write_part(str(part), slices, whole=True)
    layout = pa.parquet.ParquetFile(part).metadata
    assert [layout.row_group(g).num_rows for g in range(layout.num_row_groups)] == [ROW_GROUP_ROWS, ROW_GROUP_ROWS, 9000 - 2 * ROW_GROUP_ROWS]
    write_output(str(tmp_path / "out"), [str(part)], {"counts": {}}, moved=True)
    assert not part.exists()
    assert pa.parquet.read_table(tmp_path / "out" / "indicators.parquet").equals(pa.concat_tables(slices))


def test_block_files_work_on_any_filesystem_and_a_cut_one_is_an_error(tmp_path: Path, rng: np.random.Generator) -> None:
    block = sp.csr_array(sp.random_array((20, 9), density=0.3, rng=rng, format="csr") * 7).astype(np.int64)
    scratch.write_block("memory://scratch/b.arrays", block, by_item=sp.csc_array(block))
    assert _layouts_equal(scratch.map_layouts("memory://scratch/b.arrays"), block)  # not local: read whole
    url = tmp_path / "cut.arrays"
    scratch.write_block(str(url), block)
    url.write_bytes(url.read_bytes()[:-4])
    with pytest.raises(OSError, match="cut short or damaged in its array 'data'"):
        scratch.read_block(str(url))
    with pytest.raises(OSError, match="cut short or damaged in its array 'data'"):
        scratch.map_layouts(str(url))


def test_groups_round_trip_one_at_a_time(tmp_path: Path) -> None:
    groups = [{"rows": np.arange(n, dtype=np.int32), "scores": np.linspace(0, 1, n)} for n in (3, 0, 5)]
    url = str(tmp_path / "g.arrow")
    scratch.write_groups(url, groups)
    for number in (2, 0, 1):
        read = scratch.read_group(url, number)
        assert read.keys() == groups[number].keys()
        for name, values in groups[number].items():
            np.testing.assert_array_equal(read[name], values)
            assert read[name].dtype == values.dtype
