"""How a daskrec process asks glibc's allocator for memory and hands it back.

Two settings, one reason each (measured on the 50M-event build, README "Benchmarks"):

* :data:`MALLOC_SETTINGS`: arrays of 1 MiB and more are mapped and unmapped on their own, and
  the heap is trimmed, so a process returns the memory it frees and its peak stays honest. Set
  with ``mallopt`` inside a running process (:func:`return_freed_memory`), or in the environment
  of a worker process before it starts (:func:`worker_environ`).
* :data:`HUGE_PAGES`: those fresh mappings are asked for in 2 MiB pages (transparent huge pages,
  ``madvise``). Every page a process touches for the first time costs a fault, and with 4 KiB
  pages a build spent a third of its CPU in the kernel. glibc reads this one only when a process
  starts (``GLIBC_TUNABLES``), so the command line starts itself again with it
  (:func:`relaunch_with_huge_pages`); nothing else is imported before that.

Each is a no-op where glibc is not the C library. This module imports nothing heavy: it runs
before the command line is imported.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

__all__ = ["HUGE_PAGES", "MALLOC_SETTINGS", "relaunch_with_huge_pages", "return_freed_memory", "worker_environ"]

MALLOC_SETTINGS = {"MALLOC_TRIM_THRESHOLD_": 65536, "MALLOC_MMAP_THRESHOLD_": 1 << 20}
"""glibc settings that hand freed memory back to the system. With glibc's defaults the threshold
for mapping grows after large frees, and a build's process then kept ~300 MB it no longer used
(measured: peak 1.29 GB against 0.96 GB, 50M events, 1 GB limit)."""

HUGE_PAGES = "glibc.malloc.hugetlb=1"
"""The glibc tunable that ``madvise``s its mappings for transparent huge pages (glibc 2.35+;
older versions ignore it). Measured on the 50M-event ``all`` build, same runs: 22.1–22.6 s
against 24.0–26.0 s, 2.2M page faults against 3.8M, the same peak."""

_TUNABLES = "GLIBC_TUNABLES"


def _is_glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError, AttributeError):  # not glibc, or no confstr (Windows)
        return False


def _with_huge_pages(environ: Mapping[str, str]) -> dict[str, str] | None:
    """``environ`` with :data:`HUGE_PAGES` added to its tunables; ``None`` when it needs nothing
    (not glibc, or the tunable already chosen, by us or by the user, e.g. ``hugetlb=0``).

    >>> _with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
    True
    """
    tunables = environ.get(_TUNABLES, "")
    if not _is_glibc() or "glibc.malloc.hugetlb=" in tunables:
        return None
    return {**environ, _TUNABLES: f"{tunables}:{HUGE_PAGES}" if tunables else HUGE_PAGES}


def relaunch_with_huge_pages() -> None:
    """Start this program again, same arguments, with :data:`HUGE_PAGES`; return if it has it.

    Only for a process that is a command (its ``sys.orig_argv`` starts it again): call it before
    importing anything large, since the first process's work is thrown away.
    """
    environ = _with_huge_pages(os.environ)
    if environ is not None and sys.executable and sys.orig_argv:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, environ)


def worker_environ() -> dict[str, str]:
    """The environment variables that give a worker process both settings from its start."""
    settings = {name: str(value) for name, value in MALLOC_SETTINGS.items()}
    environ = _with_huge_pages(os.environ)  # the tunables this process has, kept
    return settings if environ is None else {**settings, _TUNABLES: environ[_TUNABLES]}


def return_freed_memory() -> None:
    """Apply :data:`MALLOC_SETTINGS` to this running process (glibc only; a no-op elsewhere)."""
    if not _is_glibc():
        return
    mallopt = ctypes.CDLL("libc.so.6").mallopt
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    mallopt(m_trim_threshold, MALLOC_SETTINGS["MALLOC_TRIM_THRESHOLD_"])
    mallopt(m_mmap_threshold, MALLOC_SETTINGS["MALLOC_MMAP_THRESHOLD_"])
