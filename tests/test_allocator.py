"""The command line's allocator settings: what a relaunch adds, keeps, and what it gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daskrec.allocator import HUGE_PAGES, MALLOC_SETTINGS, worker_environ

GLIBC = bool(os.confstr("CS_GNU_LIBC_VERSION")) if hasattr(os, "confstr") else False
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
needs_glibc = pytest.mark.skipif(not GLIBC, reason="glibc's tunables only exist where glibc is the C library")

RELAUNCHED = """
from daskrec.allocator import relaunch_with_huge_pages
relaunch_with_huge_pages()
import os, re, sys
block = bytearray(64 << 20)  # touched: malloc maps it, bytearray zeroes it
rollup = open("/proc/self/smaps_rollup").read() if os.path.exists("/proc/self/smaps_rollup") else ""
huge = re.search(r"AnonHugePages:\\s+(\\d+)", rollup)
print(os.environ.get("GLIBC_TUNABLES"), int(huge.group(1)) if huge else -1, "loaded:", " ".join(
    name for name in ("numpy", "pandas", "dask", "numba", "daskrec.cli") if name in sys.modules))
"""


def relaunched(tunables: str | None) -> tuple[str, int, str]:
    """What a process that called ``relaunch_with_huge_pages`` first sees: its tunables, its
    huge pages in kB after touching 64 MiB, and the heavy modules it had loaded."""
    environ = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    if tunables is not None:
        environ["GLIBC_TUNABLES"] = tunables
    out = subprocess.run([sys.executable, "-c", RELAUNCHED], env=environ, capture_output=True, text=True, check=True).stdout
    seen, huge_kb, loaded = out.split(" ", 2)
    return seen, int(huge_kb), loaded.removeprefix("loaded:").strip()


@needs_glibc
@pytest.mark.parametrize(
    ("given", "seen"),
    [
        (None, HUGE_PAGES),
        ("glibc.malloc.arena_max=2", f"glibc.malloc.arena_max=2:{HUGE_PAGES}"),  # the user's kept
        ("glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0"),  # the user's choice wins
    ],
)
def test_relaunch_adds_the_huge_page_tunable_once(given: str | None, seen: str) -> None:
    assert relaunched(given)[0] == seen


@needs_glibc
@pytest.mark.skipif(
    not THP.exists() or "[never]" in THP.read_text(), reason="this kernel has no transparent huge pages to give"
)
def test_a_relaunched_process_gets_huge_pages_for_its_large_blocks() -> None:
    _, with_huge_pages, loaded = relaunched(None)
    _, without, _ = relaunched("glibc.malloc.hugetlb=0")
    assert with_huge_pages >= 32 << 10  # kB: most of the 64 MiB block
    if "[madvise]" in THP.read_text():  # only what asks for them gets them
        assert without < with_huge_pages
    assert loaded == ""  # nothing heavy was imported before the relaunch threw it away


def test_worker_processes_start_with_both_settings() -> None:
    environ = worker_environ()
    assert {name: environ[name] for name in MALLOC_SETTINGS} == {name: str(value) for name, value in MALLOC_SETTINGS.items()}
    if GLIBC and "glibc.malloc.hugetlb=" not in os.environ.get("GLIBC_TUNABLES", ""):
        assert environ["GLIBC_TUNABLES"].endswith(HUGE_PAGES)
