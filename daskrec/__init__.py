"""daskrec: an out-of-core item-to-item recommender on Dask (LLR indicators, Elasticsearch serving).

The public API is small:

>>> from daskrec import BuildConfig, build_indicators  # doctest: +SKIP
>>> result = build_indicators(["events.csv"], BuildConfig())  # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from .cluster import connect
from .config import (
    ALL_EVENTS,
    BuildConfig,
    ClusterConfig,
    IndexConfig,
    IndicatorConfig,
    IngestConfig,
)
from .errors import (
    ConfigError,
    DaskrecError,
    DataWarning,
    IndexingError,
    InputError,
    ServiceError,
)
from .es import EsSettings, connect_es
from .index import IndexReport, write_index
from .llr import llr, root_llr
from .output import build_manifest, read_indicators, write_build, write_output
from .pipeline import BuildReport, BuildResult, build_indicators
from .serve import Recommendation, recommend, similar
from .synth import SynthConfig, generate_events

try:
    __version__ = version("daskrec")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "ALL_EVENTS",
    "BuildConfig",
    "BuildReport",
    "BuildResult",
    "ClusterConfig",
    "ConfigError",
    "DaskrecError",
    "DataWarning",
    "EsSettings",
    "IndexConfig",
    "IndexReport",
    "IndexingError",
    "IndicatorConfig",
    "IngestConfig",
    "InputError",
    "Recommendation",
    "ServiceError",
    "SynthConfig",
    "__version__",
    "build_indicators",
    "build_manifest",
    "connect",
    "connect_es",
    "generate_events",
    "llr",
    "read_indicators",
    "recommend",
    "root_llr",
    "similar",
    "write_build",
    "write_index",
    "write_output",
]
