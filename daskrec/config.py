"""Options of a daskrec build and of its serving layout.

This module is the only place where defaults live; the CLI reads them from here. The defaults
are the configuration that evaluated best on the real datasets (``daskrec evaluate``, see the
README); :data:`TUTORIAL` is the reference recipe of the SPEC, kept exactly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .errors import ConfigError
from .schema import Layout as Layout  # re-exported: the build options name the layout too

__all__ = [
    "IngestConfig",
    "IndicatorConfig",
    "ClusterConfig",
    "SMALL_INPUT_BYTES",
    "BuildConfig",
    "IndexConfig",
    "ServiceConfig",
    "Preset",
    "PRESETS",
    "TUTORIAL",
    "ALL_EVENTS",
]

ALL_EVENTS = "all"
"""Value of ``--event`` that keeps every event type."""

OnBadRows = Literal["error", "skip"]
LLRTable = Literal["cooccurrence", "users"]
Split = Literal["global", "per-user"]
"""How an evaluation cuts train from test by time: each user's latest events, or everybody's after one instant."""
Backfill = Literal["popularity", "trending", "off"]
"""What fills a recommendation list when fewer items match: the most popular items, the most
trending ones (popularity breaking ties), or nothing."""


def check_backfill(backfill: str) -> None:
    """Raise :class:`ConfigError` unless ``backfill`` is a :data:`Backfill` value."""
    if backfill not in get_args(Backfill):
        raise ConfigError(f"backfill: must be one of {list(get_args(Backfill))}, got {backfill!r}.")


@dataclass(frozen=True)
class IngestConfig:
    """How the events log is read and cut down to the rows that count."""

    event_types: tuple[str, ...] | None = ("transaction",)
    """Event types that make up the primary matrix; ``None`` keeps every type."""

    cross_event_types: tuple[str, ...] = ()
    """Secondary event types (``view``, ``addtocart``): each gets its own indicators from the
    cross-occurrence of the primary matrix with that type's matrix over the same users."""

    recent: int = 200
    """Rows kept per visitor: the most recent by timestamp, later input rows winning ties (the tutorial keeps 50)."""

    trending_days: float = 7.0
    """Window of the ``trending`` count: visitors with a primary event on the item in the last this
    many days before the newest primary event of the log (timestamps are epoch milliseconds)."""

    on_bad_rows: OnBadRows = "error"
    """``error`` stops at the first malformed row; ``skip`` drops such rows and counts them."""

    blocksize: int = 64 * 2**20
    """Bytes of CSV per partition (Parquet is partitioned by row group)."""

    def __post_init__(self) -> None:
        if self.event_types is not None:
            if not self.event_types or any(not t for t in self.event_types):
                raise ConfigError("event_types: give at least one non-empty event type, or None for all.")
            if ALL_EVENTS in self.event_types:
                raise ConfigError(f"event_types: {ALL_EVENTS!r} cannot be mixed with other types; use None.")
        if self.cross_event_types:
            if self.event_types is None:
                raise ConfigError("cross_event_types: name the primary event type(s); 'all' leaves no type to cross with.")
            if any(t == ALL_EVENTS or not re.fullmatch(r"[A-Za-z0-9_-]+", t) for t in self.cross_event_types):
                raise ConfigError(
                    f"cross_event_types: {self.cross_event_types!r}: each must be an event type name of letters, "
                    "digits, '_' or '-' (it names the index field <type>_indicators)."
                )
            if len(set(self.cross_event_types)) != len(self.cross_event_types):
                raise ConfigError(f"cross_event_types: {self.cross_event_types!r} names a type twice.")
            shared = set(self.cross_event_types) & set(self.event_types)
            if shared:
                raise ConfigError(f"cross_event_types: {sorted(shared)} are primary types already.")
        if self.recent < 1:
            raise ConfigError(f"recent: must be at least 1, got {self.recent}.")
        if not self.trending_days > 0:
            raise ConfigError(f"trending_days: must be above 0, got {self.trending_days}.")
        if self.on_bad_rows not in ("error", "skip"):
            raise ConfigError(f"on_bad_rows: must be 'error' or 'skip', got {self.on_bad_rows!r}.")
        if self.blocksize < 1024:
            raise ConfigError(f"blocksize: must be at least 1024 bytes, got {self.blocksize}.")


@dataclass(frozen=True)
class IndicatorConfig:
    """How co-occurrences are scored and cut to each item's indicators."""

    top_k: int = 100
    """Indicators kept per item at most, best first (the tutorial keeps 50)."""

    min_llr: float = 3.0
    """Smallest root-LLR score an indicator may have (the tutorial's is 5); a score of exactly 0 is never kept."""

    llr_table: LLRTable = "users"
    """``users`` (default): Apache Mahout's table from user counts on binarised occurrences.
    ``cooccurrence``: the SPEC's (the tutorial's) 2x2 table from co-occurrence sums."""

    max_per_user: int | None = None
    """``users`` table only: downsample each user's row to about this many items (Mahout uses 500)."""

    max_per_item: int | None = None
    """``users`` table only: downsample each item's column to about this many users (Mahout uses 500)."""

    seed: int = 0
    """Seed of the downsampling draws; the same seed gives the same indicators."""

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"top_k: must be at least 1, got {self.top_k}.")
        if not self.min_llr >= 0.0:
            raise ConfigError(
                f"min_llr: must be 0 or more, got {self.min_llr}; negative root-LLR means negative association."
            )
        if self.llr_table not in ("cooccurrence", "users"):
            raise ConfigError(f"llr_table: must be 'cooccurrence' or 'users', got {self.llr_table!r}.")
        for name in ("max_per_user", "max_per_item"):
            limit = getattr(self, name)
            if limit is None:
                continue
            if self.llr_table != "users":
                raise ConfigError(f"{name}: downsampling applies to llr_table='users' only.")
            if limit < 1:
                raise ConfigError(f"{name}: must be at least 1, got {limit}.")

    @property
    def downsamples(self) -> bool:
        """Whether occurrences are downsampled before counting."""
        return self.max_per_user is not None or self.max_per_item is not None


SMALL_INPUT_BYTES = 64 * 2**20
"""Inputs up to this size run in this process on Dask's threaded scheduler unless a dashboard or a
cluster is asked for. Importing distributed, starting the LocalCluster and its dashboard cost
~3 s of start-up (measured: a whole ``daskrec build`` process on ml-latest-small took 7.4 s with
them and 3.6–4.7 s without, and 7.1–7.5 against 5.2–5.7 s on a 63 MB log of 2M events; the
outputs are identical). Such builds end in seconds, too soon to watch a dashboard."""


@dataclass(frozen=True)
class ClusterConfig:
    """Where the Dask work runs."""

    scheduler: str | None = None
    """Address of an existing scheduler (``tcp://host:8786``); ``None`` starts a LocalCluster."""

    workers: int | None = None
    """LocalCluster worker processes; ``None`` means one in-process worker using every core."""

    threads: int | None = None
    """Threads per LocalCluster worker; ``None`` shares the machine's cores among the workers."""

    memory_limit: str | None = None
    """Memory limit per LocalCluster worker (``"4GiB"``); ``None`` lets Dask choose."""

    dashboard: bool | None = None
    """On: a LocalCluster and its dashboard, whatever the input's size. Off: Dask's threaded
    scheduler in this process, no dashboard. Unset: the threaded scheduler for an input of at most
    64 MiB (SMALL_INPUT_BYTES) when no other option asks for a cluster, else the LocalCluster."""

    def __post_init__(self) -> None:
        for name in ("workers", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}: must be at least 1, got {value}.")
        if self.scheduler is not None and any(
            v is not None for v in (self.workers, self.threads, self.memory_limit)
        ):
            raise ConfigError("workers/threads/memory_limit: these size a LocalCluster; drop them with scheduler.")
        if self.dashboard is False and self._clustered():
            raise ConfigError("dashboard: off means no cluster, in this process; drop scheduler/workers/memory_limit, or keep the dashboard.")

    def _clustered(self) -> bool:
        return self.scheduler is not None or self.workers is not None or self.memory_limit is not None

    def in_process(self, input_bytes: int | None) -> bool:
        """Whether the work runs on Dask's threaded scheduler in this process rather than on a
        distributed cluster (see :attr:`dashboard`); ``input_bytes`` is the input's size, ``None``
        if unknown (which keeps the LocalCluster).

        Examples
        --------
        >>> ClusterConfig().in_process(1_000_000), ClusterConfig().in_process(None)
        (True, False)
        >>> ClusterConfig(dashboard=True).in_process(1), ClusterConfig(workers=2).in_process(1)
        (False, False)
        """
        if self.dashboard is not None:
            return not self.dashboard
        return not self._clustered() and input_bytes is not None and input_bytes <= SMALL_INPUT_BYTES


@dataclass(frozen=True)
class IndexConfig:
    """How the indicators are written to Elasticsearch."""

    alias: str = "items2"
    """Name queries use: an alias moved atomically to each new generation ``<alias>-<UTC timestamp>``."""

    keep: int = 2
    """Generations kept (the live one included); older ones are deleted after a swap."""

    replicas: int = 1
    """Replicas of each generation once loaded (0 while loading)."""

    chunk_size: int = 1000
    """Documents per bulk request at most."""

    max_chunk_bytes: int = 5 * 2**20
    """Bytes per bulk request at most."""

    layout: Layout = "weighted"
    """``weighted``: matches count by indicator strength (root LLR in steps of 3); ``keyword``: plain matches (the tutorial's)."""

    in_place_max: float = 0.25
    """After an update, the largest share of documents that may change for them to be sent into the live generation rather than a new one."""

    def __post_init__(self) -> None:
        if not self.alias or self.alias != self.alias.lower() or any(c in self.alias for c in ' "*\\<|,>/?#:'):
            raise ConfigError(f"alias: {self.alias!r} is not a valid Elasticsearch index name (lowercase, no spaces).")
        if self.keep < 1:
            raise ConfigError(f"keep: must be at least 1, got {self.keep}.")
        if self.replicas < 0 or self.chunk_size < 1 or self.max_chunk_bytes < 1024:
            raise ConfigError("replicas/chunk_size/max_chunk_bytes: must be >= 0 / >= 1 / >= 1024.")
        if self.layout not in ("weighted", "keyword"):
            raise ConfigError(f"layout: must be 'weighted' or 'keyword', got {self.layout!r}.")
        if not 0.0 <= self.in_place_max <= 1.0:
            raise ConfigError(f"in_place_max: must be between 0 and 1, got {self.in_place_max}.")


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides the indicators of a build."""

    ingest: IngestConfig = field(default_factory=IngestConfig)
    """Reading and selecting events."""

    indicators: IndicatorConfig = field(default_factory=IndicatorConfig)
    """Scoring and selecting indicators."""

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> BuildConfig:
        """The configuration that :func:`dataclasses.asdict` gave ``options`` (as a manifest keeps it)."""
        ingest = dict(options["ingest"])
        for name in ("event_types", "cross_event_types"):
            if ingest.get(name) is not None:
                ingest[name] = tuple(ingest[name])
        return cls(ingest=IngestConfig(**ingest), indicators=IndicatorConfig(**options["indicators"]))

    def __post_init__(self) -> None:
        if self.ingest.cross_event_types and self.indicators.downsamples:
            raise ConfigError(
                "max_per_user/max_per_item: downsampling is not available with cross_event_types yet; drop one."
            )


@dataclass(frozen=True)
class Preset:
    """A named recipe: how indicators are built and how they are laid out for ranking."""

    build: BuildConfig
    """The build options."""

    layout: Layout
    """The Elasticsearch layout (see :mod:`daskrec.ranking`)."""


TUTORIAL = Preset(
    build=BuildConfig(
        ingest=IngestConfig(event_types=("transaction",), recent=50),
        indicators=IndicatorConfig(top_k=50, min_llr=5.0, llr_table="cooccurrence"),
    ),
    layout="keyword",
)
"""The reference recipe of the SPEC and the original tutorial, exactly: co-occurrence-sum table,
root LLR >= 5, top 50, the last 50 events per visitor, plain keyword matching."""

PRESETS: dict[str, Preset] = {"default": Preset(build=BuildConfig(), layout="weighted"), "tutorial": TUTORIAL}
"""Named recipes for ``--preset``; ``default`` is what the dataclass defaults give."""


@dataclass(frozen=True)
class ServiceConfig:
    """What the service serves and the limits it keeps."""

    alias: str = "items2"
    """The alias of the indicators; the event store is ``<alias>_events``."""
    recent: int = 200
    """Events per field of a live history, when the generation does not record its build's ``--recent``."""
    event_types: tuple[str, ...] | None = ("transaction",)
    """Primary event types of a live history (None: every type), when the generation does not record them."""
    max_k: int = 100
    """Most items one request may ask for (``k`` + ``from``)."""
    max_history: int = 1000
    """Most items in one history or item set."""
    max_batch: int = 1000
    """Most events in one ``POST /events``."""
    max_body_bytes: int = 1 << 20
    """Largest request body."""
    api_key: str | None = field(default=None, repr=False)
    """Wanted in ``X-API-Key`` on every route but ``/healthz``; never logged."""
    retry_after_s: int = 5
    """``Retry-After`` of a 503 while the node is unreachable."""

    def __post_init__(self) -> None:
        for name in ("recent", "max_k", "max_history", "max_batch", "max_body_bytes", "retry_after_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}.")
