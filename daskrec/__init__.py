"""daskrec: an out-of-core item-to-item recommender on Dask (LLR indicators, Elasticsearch serving).

The public API is small:

>>> import pathlib, tempfile
>>> from daskrec import BuildConfig, IngestConfig, SynthConfig, build_indicators, generate_events
>>> events = str(pathlib.Path(tempfile.mkdtemp()) / "events.csv")
>>> generate_events(events, SynthConfig(events=5_000, seed=1))
5000
>>> result = build_indicators([events], BuildConfig(ingest=IngestConfig(event_types=None)))
>>> result.counts["events_read"]
5000

Names are imported when first used, as ``dask`` keeps ``dask.dataframe`` out until asked: the
read side (``daskrec.serve``, ``daskrec.ranking``, a service) then never loads Dask, numba or
the build pipeline just because the package was imported.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cluster import connect
    from .config import ALL_EVENTS, BuildConfig, ClusterConfig, IndexConfig, IndicatorConfig, IngestConfig
    from .errors import ConfigError, DaskrecError, DataWarning, IndexingError, InputError, ServiceError
    from .es import EsSettings, connect_es
    from .index import IndexReport, write_index
    from .llr import llr, root_llr
    from .output import read_indicators, write_output
    from .pipeline import BuildReport, BuildResult, build_indicators, build_manifest, update_build, write_build
    from .serve import Recommendation, recommend, similar
    from .synth import SynthConfig, generate_events

try:
    __version__ = version("daskrec")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

_HOMES = {
    "connect": "cluster",
    **dict.fromkeys(["ALL_EVENTS", "BuildConfig", "ClusterConfig", "IndexConfig", "IndicatorConfig", "IngestConfig"], "config"),
    **dict.fromkeys(["ConfigError", "DaskrecError", "DataWarning", "IndexingError", "InputError", "ServiceError"], "errors"),
    **dict.fromkeys(["EsSettings", "connect_es"], "es"),
    **dict.fromkeys(["IndexReport", "write_index"], "index"),
    **dict.fromkeys(["llr", "root_llr"], "llr"),
    **dict.fromkeys(["read_indicators", "write_output"], "output"),
    **dict.fromkeys(["BuildReport", "BuildResult", "build_indicators", "build_manifest", "update_build", "write_build"], "pipeline"),
    **dict.fromkeys(["Recommendation", "recommend", "similar"], "serve"),
    **dict.fromkeys(["SynthConfig", "generate_events"], "synth"),
}
"""The module that defines each public name."""

__all__ = sorted([*_HOMES, "__version__"])


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'daskrec' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
