"""daskrec: an out-of-core item-to-item recommender on Dask (LLR indicators, Elasticsearch serving).

The public API is small:

>>> from daskrec import BuildConfig, build_indicators  # doctest: +SKIP
>>> result = build_indicators(["events.csv"], BuildConfig())  # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from .cluster import connect
from .config import ALL_EVENTS, BuildConfig, ClusterConfig, IndicatorConfig, IngestConfig
from .errors import ConfigError, DaskrecError, DataWarning, IndexingError, InputError
from .llr import llr, root_llr
from .output import build_manifest, read_indicators, write_output
from .pipeline import BuildResult, build_indicators
from .synth import SynthConfig, generate_events

try:
    __version__ = version("daskrec")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "ALL_EVENTS",
    "BuildConfig",
    "BuildResult",
    "ClusterConfig",
    "ConfigError",
    "DaskrecError",
    "DataWarning",
    "IndexingError",
    "IndicatorConfig",
    "IngestConfig",
    "InputError",
    "SynthConfig",
    "__version__",
    "build_indicators",
    "build_manifest",
    "connect",
    "generate_events",
    "llr",
    "read_indicators",
    "root_llr",
    "write_output",
]
