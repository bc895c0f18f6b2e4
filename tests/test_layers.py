"""The layers point one way: the read side never reaches the build engine.

In the spirit of distributed's ``shuffle/tests/test_no_pandas_import.py``, twice over: the
imports written anywhere in a module (inside functions too) are parsed and followed through
daskrec, and each read-side module is imported in a fresh interpreter to see what it loads.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "daskrec"
BUILD_ENGINE = {"daskrec.pipeline", "daskrec.ingest", "daskrec.cooccurrence", "daskrec.indicators", "daskrec.scratch", "daskrec.llr"}
HEAVY = {"dask", "distributed", "numba"}
READ_SIDE = (
    "daskrec",
    "daskrec.schema",
    "daskrec.config",
    "daskrec.errors",
    "daskrec.es",
    "daskrec.ranking",
    "daskrec.serve",
    "daskrec.output",
    "daskrec.events",
    "daskrec.service",
)
"""Modules that read a finished build or the index: no build engine, no Dask, no numba."""
BULK_WRITER = ("daskrec.index",)
"""May run on Dask workers, but never needs the build engine."""


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def written_imports(module: str) -> set[str]:
    """Every module a daskrec module imports, at the top or inside functions (not under
    ``if TYPE_CHECKING``), with relative names resolved; ``daskrec`` itself only by name."""
    path = PACKAGE / ("__init__.py" if module == "daskrec" else f"{module.split('.', 1)[1]}.py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node) for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.add(node.module or "")
            elif node.module:
                found.add(f"daskrec.{node.module}")
            else:  # from . import name
                found.update(f"daskrec.{alias.name}" if (PACKAGE / f"{alias.name}.py").exists() else "daskrec" for alias in node.names)
    return found


def reachable(module: str) -> set[str]:
    """``module`` and everything its written imports reach, through daskrec's own modules."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current == "daskrec" or current.startswith("daskrec."):
            todo.extend(written_imports(current))
    return seen


def forbidden(modules: set[str], *, dask_allowed: bool) -> set[str]:
    heavy = set() if dask_allowed else HEAVY
    return {m for m in modules if m in BUILD_ENGINE or m.split(".")[0] in heavy}


@pytest.mark.parametrize("module", READ_SIDE + BULK_WRITER)
def test_written_imports_never_reach_the_build_engine(module: str) -> None:
    assert forbidden(reachable(module), dask_allowed=module in BULK_WRITER) == set()


def test_the_vocabulary_imports_nothing_from_daskrec() -> None:
    assert {m for m in written_imports("daskrec.schema") if m.startswith("daskrec")} == set()


def modules_loaded_by(modules: str, then: str = "pass") -> set[str]:
    """The modules a fresh interpreter holds after importing ``modules`` (comma-separated) and
    running the statement ``then``."""
    code = f"import sys, json, {modules}; {then}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("module", READ_SIDE + BULK_WRITER)
def test_importing_loads_no_build_engine(module: str) -> None:
    assert forbidden(modules_loaded_by(module), dask_allowed=module in BULK_WRITER) == set()


def test_the_service_starts_without_scipy() -> None:
    """What ``daskrec serve`` imports is its start-up time: scipy (0.2 s here) is the Scorer's alone."""
    assert not {name for name in modules_loaded_by("daskrec.cli, daskrec.service") if name.split(".")[0] == "scipy"}


def test_the_cli_loads_the_elasticsearch_client_only_to_connect() -> None:
    """Every command reads the node's settings; the client (0.8 s here) is for those that connect."""
    assert not {name for name in modules_loaded_by("daskrec.cli, daskrec.es") if name.split(".")[0] in {"elasticsearch", "elastic_transport"}}


def test_a_small_build_loads_neither_dataframes_nor_distributed(tmp_path: Path) -> None:
    """A build hands each partition to a task of its own (``read_partitions``) and runs a small
    input on the threaded scheduler: ``dask.dataframe`` (1.2 s here, it imports ``dask.array``)
    and ``distributed`` (0.4 s) are for those who ask for them."""
    events = tmp_path / "events.csv"
    build = f"daskrec.synth.generate_events({str(events)!r}, daskrec.synth.SynthConfig(events=3000, seed=2)); " \
            f"assert daskrec.cli.main(['build', {str(events)!r}, '--out', {str(tmp_path / 'out')!r}, '--no-progress']) == 0"
    loaded = modules_loaded_by("daskrec.cli, daskrec.synth", build)  # a submodule brings its package
    assert (tmp_path / "out" / "manifest.json").exists()
    assert {"dask.dataframe", "dask.array", "distributed"} & loaded == set()


def test_every_public_name_resolves_lazily() -> None:
    import daskrec

    for name in daskrec.__all__:
        assert getattr(daskrec, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        daskrec.nothing  # noqa: B018
