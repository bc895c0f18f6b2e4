"""The ``daskrec`` command: parse options into configs, call the library, own the exit codes.

Exit codes: 0 success, 2 a daskrec error (bad input or options: the message says which and
how to fix it), 1 anything else. ``--debug`` adds the traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import gc
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, get_args

import click

from .config import (
    ALL_EVENTS,
    PRESETS,
    Backfill,
    BuildConfig,
    ClusterConfig,
    IndexConfig,
    IndicatorConfig,
    IngestConfig,
    Layout,
    LLRTable,
    OnBadRows,
    Preset,
    ServiceConfig,
    Split,
)
from .errors import DaskrecError, InputError
from .es import NO_VERIFY_WARNING, EsSettings
from .schema import indicator_field

if TYPE_CHECKING:
    from .index import IndexReport

log = logging.getLogger(__name__)

_INGEST = IngestConfig()
_CLUSTER = ClusterConfig()
_INDEX = IndexConfig()
_ES = EsSettings()
_LOG_FORMAT, _LOG_TIME = "%(asctime)s %(name)s %(levelname)s: %(message)s", "%H:%M:%S"
SECRET_VARIABLES = ("DASKREC_ES_API_KEY", "DASKREC_ES_USERNAME", "DASKREC_ES_PASSWORD")
"""Environment variables the CLI reads credentials from (never flags: they would show in ``ps``)."""


def _doc(config: type, name: str) -> str:
    """Help text of a config field: the first sentence of its docstring in the source."""
    after = _source(config).split(f"\n    {name}:", 1)[1]
    text = after.split('"""', 2)[1]
    return " ".join(text.replace("``", "").split())


@functools.cache
def _source(config: type) -> str:
    """A class's source, read once (every option's help comes from it)."""
    import inspect

    return inspect.getsource(config)


def _settings_from_environment(
    url: str, ca_certs: str | None = None, verify_certs: bool = True, timeout: float = 30.0
) -> EsSettings:
    """Connection settings: the given options plus credentials from :data:`SECRET_VARIABLES`."""
    return EsSettings(
        url=url,
        api_key=os.environ.get("DASKREC_ES_API_KEY") or None,
        username=os.environ.get("DASKREC_ES_USERNAME") or None,
        password=os.environ.get("DASKREC_ES_PASSWORD") or None,
        ca_certs=ca_certs,
        verify_certs=verify_certs,
        request_timeout=timeout,
    )


def es_options(*, optional: bool = False, alias: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The Elasticsearch connection options, handed to the command as ``es`` (an :class:`EsSettings`,
    or ``None`` when ``optional`` and no URL was given), and with ``alias`` the ``--index`` option."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @click.option(
            "--es-url",
            envvar="DASKREC_ES_URL",
            default=None if optional else _ES.url,
            show_envvar=True,
            help=("Also index the result into Elasticsearch at this URL. " if optional else "Elasticsearch URL. ")
            + "Credentials come from DASKREC_ES_API_KEY or DASKREC_ES_USERNAME/DASKREC_ES_PASSWORD.",
        )
        @click.option("--es-ca-certs", default=None, help=_doc(EsSettings, "ca_certs"))
        @click.option("--es-verify-certs/--es-no-verify-certs", default=_ES.verify_certs, help=_doc(EsSettings, "verify_certs"))
        @click.option("--es-timeout", type=click.FloatRange(min=0, min_open=True), default=_ES.request_timeout, help=_doc(EsSettings, "request_timeout"))
        @functools.wraps(command)
        def wrapper(es_url: str | None, es_ca_certs: str | None, es_verify_certs: bool, es_timeout: float, **kwargs: Any) -> Any:
            es = None if es_url is None else _settings_from_environment(es_url, es_ca_certs, es_verify_certs, es_timeout)
            if es is not None and not es.verify_certs:
                click.echo(f"daskrec: warning: {NO_VERIFY_WARNING}", err=True)
            return command(es=es, **kwargs)

        if alias:
            return click.option("--index", "alias", default=_INDEX.alias, help=_doc(IndexConfig, "alias"))(wrapper)
        return wrapper

    return decorate


@dataclasses.dataclass(frozen=True)
class ClusterRun:
    """Where a command's Dask work runs and how it is watched (the cluster options)."""

    config: ClusterConfig
    dashboard_address: str
    progress: bool
    report_path: str | None

    @contextlib.contextmanager
    def session(self, debug: bool, input_bytes: int | None = None) -> Iterator[None]:
        """Run the enclosed work in this process on Dask's threaded scheduler when the cluster
        options allow it for an input of ``input_bytes`` (:meth:`ClusterConfig.in_process`);
        otherwise connect (starting a LocalCluster unless ``--scheduler``), print the dashboard
        link, and record the performance report if asked."""
        if self.report_path is None and self.config.in_process(input_bytes):
            import dask
            import dask.threaded

            click.echo("daskrec: running in this process on Dask's threaded scheduler, no dashboard"
                       + (" (a small input; --dashboard starts the LocalCluster)" if self.config.dashboard is None else ""), err=True)
            # The scheduler as a function, not the name "threads": with a name, Dask imports
            # distributed to look for a client (~0.4 s here). Without --threads, num_workers stays
            # unset and the threaded scheduler uses every core (as scheduling.scheduler_threads says).
            with dask.config.set(scheduler=dask.threaded.get, num_workers=self.config.threads):
                yield
            return
        from .cluster import connect

        quiet = logging.WARNING if debug else logging.CRITICAL
        with connect(self.config, dashboard_address=self.dashboard_address, worker_log_level=quiet) as client, _reporting(
            self.report_path
        ):
            click.echo(f"Dask dashboard: {client.dashboard_link}", err=True)
            yield


def cluster_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The cluster options, handed to ``command`` as ``run`` (a :class:`ClusterRun`)."""

    @click.option("--scheduler", default=None, help=_doc(ClusterConfig, "scheduler"))
    @click.option("--workers", type=click.IntRange(min=1), default=None, help=_doc(ClusterConfig, "workers"))
    @click.option("--threads", type=click.IntRange(min=1), default=None, help=_doc(ClusterConfig, "threads"))
    @click.option("--memory-limit", default=None, help=_doc(ClusterConfig, "memory_limit"))
    @click.option("--dashboard-address", default=":8787", help="Where a LocalCluster serves its dashboard.")
    @click.option("--dashboard/--no-dashboard", default=None, help=_doc(ClusterConfig, "dashboard") + " [default: by size]")
    @click.option("--progress/--no-progress", default=True, help="Show progress bars.")
    @click.option("--report", "report_path", default=None, help="Write Dask's performance report (HTML) of the run here.")
    @functools.wraps(command)
    def wrapper(
        scheduler: str | None,
        workers: int | None,
        threads: int | None,
        memory_limit: str | None,
        dashboard_address: str,
        dashboard: bool | None,
        progress: bool,
        report_path: str | None,
        **kwargs: Any,
    ) -> Any:
        if dashboard is False and report_path is not None:
            raise click.UsageError("--report records a LocalCluster's work; drop --no-dashboard.")
        cluster = ClusterConfig(scheduler=scheduler, workers=workers, threads=threads, memory_limit=memory_limit, dashboard=dashboard)
        return command(run=ClusterRun(cluster, dashboard_address, progress, report_path), **kwargs)

    return wrapper


def _choice(literal: Any) -> click.Choice[str]:
    """The values of a ``Literal`` type as a click choice: one list, owned by the type."""
    return click.Choice(list(get_args(literal)))


def _preset_value(preset: Preset, name: str) -> object:
    """The value a preset gives the build option ``name`` (an IngestConfig or IndicatorConfig field, or ``layout``)."""
    if name == "layout":
        return preset.layout
    if name == "event_types":
        return ",".join(preset.build.ingest.event_types or (ALL_EVENTS,))
    section = preset.build.ingest if hasattr(preset.build.ingest, name) else preset.build.indicators
    return getattr(section, name)


def _preset_help(text: str, name: str) -> str:
    """Help text ending with the option's value in each preset."""
    values = "; ".join(f"{key}: {_preset_value(preset, name)}" for key, preset in sorted(PRESETS.items()))
    return f"{text} [{values}]"


_INGEST_OPTIONS = ("recent", "trending_days")
"""Build options that set an IngestConfig field (the others set IndicatorConfig fields)."""


def build_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that decide a build, handed to ``command`` as ``config`` (a BuildConfig) and
    ``layout``: a ``--preset`` gives every value, and options given on the command line win."""

    @click.option(
        "--preset",
        type=click.Choice(sorted(PRESETS)),
        default="default",
        help="Recipe the other options start from: default (measured best) or tutorial (the SPEC's recipe, exactly).",
    )
    @click.option("--event", "event_types", default=None, help=_preset_help("Primary event type(s), comma-separated, or 'all'.", "event_types"))
    @click.option("--cross", "cross_types", default=None, help=_doc(IngestConfig, "cross_event_types") + " Comma-separated.")
    @click.option("--recent", type=click.IntRange(min=1), default=None, help=_preset_help(_doc(IngestConfig, "recent"), "recent"))
    @click.option("--trending-days", type=click.FloatRange(min=0, min_open=True), default=None, help=_preset_help(_doc(IngestConfig, "trending_days"), "trending_days"))
    @click.option("--top-k", type=click.IntRange(min=1), default=None, help=_preset_help(_doc(IndicatorConfig, "top_k"), "top_k"))
    @click.option("--min-llr", type=float, default=None, help=_preset_help(_doc(IndicatorConfig, "min_llr"), "min_llr"))
    @click.option(
        "--llr-table",
        type=_choice(LLRTable),
        default=None,
        help=_preset_help("users: Mahout's table of user counts; cooccurrence: the SPEC's table of co-occurrence sums.", "llr_table"),
    )
    @click.option("--max-per-user", type=click.IntRange(min=1), default=None, help=_doc(IndicatorConfig, "max_per_user"))
    @click.option("--max-per-item", type=click.IntRange(min=1), default=None, help=_doc(IndicatorConfig, "max_per_item"))
    @click.option("--seed", type=int, default=None, help=_preset_help(_doc(IndicatorConfig, "seed"), "seed"))
    @click.option("--layout", type=_choice(Layout), default=None, help=_preset_help(_doc(IndexConfig, "layout"), "layout"))
    @click.option(
        "--on-bad-rows", type=_choice(OnBadRows), default=_INGEST.on_bad_rows, help=_doc(IngestConfig, "on_bad_rows")
    )
    @click.option("--blocksize", type=int, default=_INGEST.blocksize, help=_doc(IngestConfig, "blocksize"))
    @functools.wraps(command)
    def wrapper(
        preset: str,
        event_types: str | None,
        cross_types: str | None,
        layout: str | None,
        on_bad_rows: str,
        blocksize: int,
        **kwargs: Any,
    ) -> Any:
        chosen = PRESETS[preset]
        ingest, indicators = chosen.build.ingest, chosen.build.indicators
        given = {name: kwargs.pop(name) for name in ("recent", "trending_days", "top_k", "min_llr", "llr_table", "max_per_user", "max_per_item", "seed")}
        given = {name: value for name, value in given.items() if value is not None}
        ingest = dataclasses.replace(
            ingest,
            on_bad_rows=on_bad_rows,  # type: ignore[arg-type]
            blocksize=blocksize,
            **{n: v for n, v in given.items() if n in _INGEST_OPTIONS},
        )
        if event_types is not None:  # "all" becomes None: every type
            ingest = dataclasses.replace(ingest, event_types=_event_types(event_types))
        if cross_types is not None:
            ingest = dataclasses.replace(ingest, cross_event_types=tuple(t.strip() for t in cross_types.split(",") if t.strip()))
        indicators = dataclasses.replace(indicators, **{n: v for n, v in given.items() if n not in _INGEST_OPTIONS})
        config = BuildConfig(ingest=ingest, indicators=indicators)
        return command(config=config, layout=layout or chosen.layout, **kwargs)

    return wrapper


@contextlib.contextmanager
def _reporting(path: str | None) -> Iterator[None]:
    """Record Dask's performance report of the enclosed work into ``path`` (if given)."""
    if path is None:
        yield
        return
    from distributed import performance_report

    with performance_report(filename=path):
        yield
    click.echo(f"Dask performance report: {path}", err=True)


def _event_types(value: str) -> tuple[str, ...] | None:
    types = tuple(t.strip() for t in value.split(",") if t.strip())
    return None if types == (ALL_EVENTS,) else types


def _check_loading(es: EsSettings, alias: str) -> None:
    """Connect and check the privileges that loading ``alias`` needs, before any work starts."""
    from .es import connect_es
    from .index import check_write_privileges

    with connect_es(es) as client:
        check_write_privileges(client, alias)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="daskrec")
@click.option("-v", "--verbose", count=True, help="Log other libraries too (-vv: daskrec debug messages).")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, debug: bool) -> None:
    """daskrec: item-to-item recommendations from an events log (LLR indicators, on Dask)."""
    ours = logging.getLogger("daskrec")
    ours.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    if verbose:
        logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT, datefmt=_LOG_TIME)
    elif not ours.handlers:
        # Only daskrec's own logger gets a handler: with none on the root logger, distributed
        # (imported later, lazily) installs its own, which a LocalCluster's silence_logs quiets.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_LOG_FORMAT, datefmt=_LOG_TIME))
        ours.addHandler(handler)
        ours.propagate = False
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("events", nargs=-1, required=True)
@click.option("--out", "out_dir", required=True, help="Folder for indicators.parquet and manifest.json.")
@build_options
@cluster_options
@es_options(optional=True)
@click.option("--keep", type=click.IntRange(min=1), default=_INDEX.keep, help=_doc(IndexConfig, "keep"))
@click.pass_context
def build(
    ctx: click.Context,
    events: tuple[str, ...],
    out_dir: str,
    config: BuildConfig,
    layout: Layout,
    run: ClusterRun,
    es: EsSettings | None,
    alias: str,
    keep: int,
) -> None:
    """Compute every item's indicators from EVENTS (CSV/Parquet paths, globs or URLs);
    with --es-url, index them too."""
    from .ingest import expand_inputs
    from .pipeline import write_build

    files = expand_inputs(events)  # fail on a bad path or header before starting any cluster
    index_config = IndexConfig(alias=alias, keep=keep, layout=layout)
    if es is not None:
        _check_loading(es, alias)  # a wrong URL, certificate, credentials or privilege fails now, not after the build
    with run.session(ctx.obj["debug"], input_bytes=sum(file.size for file in files)):
        built = write_build(events, out_dir, config, show_progress=run.progress)
        if es is not None:
            _index_build(out_dir, es, index_config, run.progress)
    _echo_summary(built.counts, built.timings, out_dir)


def _index_build(out_dir: str, es: EsSettings, config: IndexConfig, progress: bool) -> None:
    """Index the build in ``out_dir`` into a new generation behind ``config.alias``; say so."""
    from .index import write_index

    _say_indexed(write_index(out_dir, es, config, show_progress=progress), config.alias)


def _say_indexed(indexed: IndexReport, alias: str) -> None:
    """One line on what a load or an update of the index did."""
    if indexed.in_place:
        click.echo(f"{indexed.documents} changed documents sent into {indexed.index} (behind alias {alias!r}), "
                   f"{indexed.removed} removed", err=True)
    else:
        click.echo(f"{indexed.documents} documents in {indexed.index}, now behind alias {alias!r}", err=True)


def _export_new_events(es: EsSettings, alias: str, out_dir: str, after: int | None) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The events the service stored since the build in ``out_dir`` last read its event store,
    written to ``out_dir/events-store/`` (no file when there are none), and the store's position
    to record with the update."""
    import posixpath

    import fsspec

    from .es import connect_es
    from .events import events_index, export_events
    from .output import complete_pending, read_manifest

    complete_pending(out_dir)  # an update committed but not renamed: its manifest holds the position
    read = read_manifest(out_dir).get("events_store")
    index = events_index(alias)
    start = after if read is None else int(read["through"])
    if start is None:
        raise click.UsageError(
            f"{out_dir} does not record which events of the store {index!r} it holds (it was built from files): "
            "give --after with the `through` that export-events printed for them, or --after -1 if it holds none."
        )
    if read is not None and after is not None and after != read["through"]:
        raise click.UsageError(f"{out_dir} holds the events of {read['index']!r} through operation {read['through']}, not {after}.")
    path = f"{out_dir.rstrip('/')}/events-store/after-{start}.csv"  # a failed attempt's file is written again, larger
    fs, local_path = fsspec.core.url_to_fs(path)
    fs.makedirs(posixpath.dirname(local_path), exist_ok=True)
    with connect_es(es) as client:
        exported = export_events(client, alias, path, start)
    if read is not None and (read["index"], read["uuid"]) != (index, exported.store):
        fs.rm(local_path)
        raise InputError(
            f"the event store {index!r} is not the one this build read through operation {read['through']} "
            f"({read['index']!r}, uuid {read['uuid']}): it was created again; build over all events once.",
            path=out_dir,
        )
    position = {"index": index, "uuid": exported.store, "through": exported.through}
    if not exported.events:
        fs.rm(local_path)
        click.echo(f"no events stored in {index!r} since operation {start}: the build is up to date", err=True)
        return (), position
    click.echo(f"{exported.events} events stored in {index!r} after operation {start} -> {path}", err=True)
    return (path,), position


def _echo_summary(counts: dict[str, int], timings: dict[str, float], out_dir: str) -> None:
    """One line on what a build (or update) made."""
    changed = f"{counts['users_changed']} users changed; " if "users_changed" in counts else ""
    click.echo(
        f"{changed}{counts['items']} items ({counts['items_with_indicators']} with indicators) from "
        f"{counts['events_kept']} of {counts['events_read']} events, {counts['users']} users "
        f"in {sum(timings.values()):.1f}s -> {out_dir}"
    )


@cli.command()
@click.argument("events", nargs=-1)
@click.option("--build", "out_dir", required=True, help="Folder of the build to bring up to date (from `daskrec build --out`).")
@click.option("--from-store", is_flag=True, help="Take the new events from the service's event store at --es-url: "
              "those stored since the build last read it (recorded in its manifest).")
@click.option("--after", type=click.IntRange(min=-1), default=None,
              help="With --from-store, for a build that records no read of the store: the `through` that "
              "export-events printed for the events it was built with (-1: it holds none of them).")
@click.option("--on-bad-rows", type=_choice(OnBadRows), default=None, help=_doc(IngestConfig, "on_bad_rows") + " [default: as built]")
@cluster_options
@es_options(optional=True)
@click.option("--keep", type=click.IntRange(min=1), default=_INDEX.keep, help=_doc(IndexConfig, "keep"))
@click.option("--layout", type=_choice(Layout), default=None, help=_doc(IndexConfig, "layout") + " [default: the live generation's]")
@click.option("--in-place-max", type=click.FloatRange(0.0, 1.0), default=_INDEX.in_place_max, show_default=True, help=_doc(IndexConfig, "in_place_max"))
@click.pass_context
def update(
    ctx: click.Context,
    events: tuple[str, ...],
    out_dir: str,
    from_store: bool,
    after: int | None,
    on_bad_rows: OnBadRows | None,
    run: ClusterRun,
    es: EsSettings | None,
    alias: str,
    keep: int,
    layout: Layout | None,
    in_place_max: float,
) -> None:
    """Bring the build in --build up to date with the new EVENTS (CSV/Parquet paths, globs or
    URLs), or with --from-store the events the service stored since the build last read them,
    exactly as a full build over all its events would be; with --es-url, send the changed
    documents into the live generation, or load a new one when many changed."""
    from .ingest import expand_inputs
    from .pipeline import state_bytes, update_build

    if from_store == bool(events):
        raise click.UsageError("give the new EVENTS files, or --from-store (not both).")
    if after is not None and not from_store:
        raise click.UsageError("--after goes with --from-store.")
    if es is not None:
        _check_loading(es, alias)
    store: dict[str, Any] | None = None
    if from_store:
        if es is None:
            raise click.UsageError("--from-store reads the service's event store: give --es-url (and --index).")
        events, store = _export_new_events(es, alias, out_dir, after)
    files = expand_inputs(events) if events else []  # fail on a bad path or header before starting any cluster
    # An update computes the indicators of every kept row again: size the run by those too.
    with run.session(ctx.obj["debug"], input_bytes=state_bytes(out_dir) + sum(file.size for file in files)):
        updated = update_build(events, out_dir, on_bad_rows=on_bad_rows, events_store=store, show_progress=run.progress) if events else None
        if es is not None:
            from .es import connect_es
            from .index import live_layout, update_index

            if layout is None:
                with connect_es(es) as client:
                    layout = live_layout(client, alias) or _INDEX.layout
            config = IndexConfig(alias=alias, keep=keep, layout=layout, in_place_max=in_place_max)
            _say_indexed(update_index(out_dir, es, config, show_progress=run.progress), alias)
    if updated is not None:
        _echo_summary(updated.counts, updated.timings, out_dir)


@cli.command()
@click.argument("out")
@click.option("--events", type=click.IntRange(min=1), required=True, help="Rows to write.")
@click.option("--users", type=click.IntRange(min=1), default=None, help="Distinct visitors [default: events/20].")
@click.option("--items", type=click.IntRange(min=1), default=None, help="Distinct items [default: events/100].")
@click.option("--seed", type=int, default=0, help="Seed: the same options give the same file.")
def generate(out: str, events: int, users: int | None, items: int | None, seed: int) -> None:
    """Write a seeded synthetic events log to OUT (CSV, or Parquet for .parquet)."""
    from .synth import SynthConfig, generate_events

    written = generate_events(out, SynthConfig(events=events, users=users, items=items, seed=seed))
    click.echo(f"{written} events -> {out}")


@cli.command()
@click.argument("out_dir")
@click.option("-n", "--items", "n_items", type=click.IntRange(min=1), default=5, help="Items to show.")
def show(out_dir: str, n_items: int) -> None:
    """Print the items of a build in OUT_DIR with the most indicators."""
    from .output import read_indicators

    frame = read_indicators(out_dir).to_pandas()
    frame = frame.assign(n=frame[indicator_field()].map(len)).sort_values(["n", "item"], ascending=[False, True])
    for row in frame.head(n_items).itertuples():
        pairs = ", ".join(f"{item} ({score:.1f})" for item, score in zip(row.indicators[:8], row.scores[:8]))
        more = f", ... {row.n - 8} more" if row.n > 8 else ""
        click.echo(f"{row.item}: {pairs}{more}")


@cli.command("index")
@click.argument("out_dir")
@es_options()
@click.option("--keep", type=click.IntRange(min=1), default=_INDEX.keep, help=_doc(IndexConfig, "keep"))
@click.option("--replicas", type=click.IntRange(min=0), default=_INDEX.replicas, help=_doc(IndexConfig, "replicas"))
@click.option("--layout", type=_choice(Layout), default=_INDEX.layout, help=_doc(IndexConfig, "layout"))
@click.option("--properties", "properties_path", default=None, help="CSV/Parquet of item properties: an 'item' column and one per property.")
@click.option("--list-columns", default="", help="Property columns whose text holds several values separated by '|'.")
@cluster_options
@click.pass_context
def index_command(
    ctx: click.Context,
    out_dir: str,
    es: EsSettings,
    alias: str,
    keep: int,
    replicas: int,
    layout: Layout,
    properties_path: str | None,
    list_columns: str,
    run: ClusterRun,
) -> None:
    """Index the build in OUT_DIR into a new generation and move the alias to it."""
    from .index import read_item_properties, write_index
    from .output import read_manifest

    config = IndexConfig(alias=alias, keep=keep, replicas=replicas, layout=layout)
    properties = None
    if properties_path is not None:
        columns = [c.strip() for c in list_columns.split(",") if c.strip()]
        import pyarrow as pa

        item_type = pa.type_for_alias(read_manifest(out_dir)["item_id_type"])
        properties = read_item_properties(properties_path, item_type, columns)
    else:
        read_manifest(out_dir)  # a folder without a complete build fails before any cluster starts
    _check_loading(es, alias)
    with run.session(ctx.obj["debug"]):
        report = write_index(out_dir, es, config, properties=properties, show_progress=run.progress)
    click.echo(f"{report.documents} documents in {report.index}, now behind alias {alias!r}")


@cli.command()
@click.argument("item")
@es_options()
def similar(item: str, es: EsSettings, alias: str) -> None:
    """Print the indicators of ITEM, best first."""
    from .es import connect_es
    from .serve import similar as similar_items

    with connect_es(es) as client:
        for indicator in similar_items(client, item, index=alias):
            click.echo(indicator)


def _property_values(pairs: tuple[str, ...], option: str) -> dict[str, list[str]]:
    """``NAME=VALUE`` options grouped by name."""
    out: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint=option)
        out.setdefault(name, []).append(value)
    return out


def _field_boosts(pairs: tuple[str, ...]) -> dict[str, float]:
    """``TYPE=WEIGHT`` options as weights per indicator field (``primary`` is the primary field)."""
    out: dict[str, float] = {}
    for pair in pairs:
        name, _, weight = pair.partition("=")
        try:
            out[indicator_field(None if name == "primary" else name)] = float(weight)
        except ValueError:
            raise click.BadParameter(f"{pair!r} is not TYPE=WEIGHT", param_hint="--field-boost") from None
    return out


def _property_boosts(triples: tuple[str, ...]) -> list[tuple[str, object, float]]:
    """``NAME=VALUE=FACTOR`` options."""
    out: list[tuple[str, object, float]] = []
    for triple in triples:
        name, _, rest = triple.partition("=")
        value, _, factor = rest.rpartition("=")
        try:
            out.append((name, value, float(factor)))
        except ValueError:
            raise click.BadParameter(f"{triple!r} is not NAME=VALUE=FACTOR", param_hint="--boost") from None
        if not name or not value:
            raise click.BadParameter(f"{triple!r} is not NAME=VALUE=FACTOR", param_hint="--boost")
    return out


@cli.command()
@click.option("--history", required=True, help="The user's recent items, comma-separated.")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, help="Items to recommend.")
@click.option(
    "--backfill",
    type=_choice(Backfill),
    default="popularity",
    help="What fills the list when few items match: the most popular, the most trending (the build's --trending-days), or nothing.",
)
@click.option("--exclude", default="", help="Items never to recommend (already seen, a blacklist), comma-separated.")
@click.option("--include", multiple=True, help="NAME=VALUE: only items whose property NAME has VALUE (repeatable).")
@click.option("--exclude-where", multiple=True, help="NAME=VALUE: no item whose property NAME has VALUE (repeatable).")
@click.option("--boost", multiple=True, help="NAME=VALUE=FACTOR: multiply the score of items with that property value.")
@click.option("--cross-history", multiple=True, help="TYPE=ITEM,ITEM,...: the user's recent items of a cross-occurrence type.")
@click.option("--field-boost", multiple=True, help="TYPE=WEIGHT: weight of a cross type's matches ('primary' for the primary).")
@es_options()
def recommend(
    history: str,
    k: int,
    backfill: Backfill,
    exclude: str,
    include: tuple[str, ...],
    exclude_where: tuple[str, ...],
    boost: tuple[str, ...],
    cross_history: tuple[str, ...],
    field_boost: tuple[str, ...],
    es: EsSettings,
    alias: str,
) -> None:
    """Print up to K items for a user with the given history: item, score, reason."""
    from .es import connect_es
    from .serve import ItemFilter
    from .serve import recommend as recommend_items

    items = [item.strip() for item in history.split(",") if item.strip()]
    item_filter = ItemFilter(
        exclude=tuple(item.strip() for item in exclude.split(",") if item.strip()),
        include=_property_values(include, "--include"),
        exclude_where=_property_values(exclude_where, "--exclude-where"),
        boosts=_property_boosts(boost),
    )
    cross: dict[str, list[str]] = {}
    for name, lists in _property_values(cross_history, "--cross-history").items():
        cross[name] = [item.strip() for listed in lists for item in listed.split(",") if item.strip()]
    with connect_es(es) as client:
        for found in recommend_items(
            client, items, k, index=alias, backfill=backfill, item_filter=item_filter,
            cross_histories=cross, boosts=_field_boosts(field_boost),
        ):
            click.echo(f"{found.item}\t{found.score:.4f}\t{found.reason}")


@cli.command()
@click.argument("events", nargs=-1, required=True)
@build_options
@click.option("--split", type=_choice(Split), default="per-user", help="How train and test are cut by time.")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, help="List length scored.")
@click.option("--json", "json_path", default=None, help="Write the metrics here as JSON.")
@click.option("--plot", "plot_path", default=None, help="Write a bar chart of the metrics here (PNG).")
@click.option("--es/--no-es", "use_es", default=True, help="Serve from Elasticsearch, or rank in process the same way.")
@es_options(alias=False)
@click.option("--field-boost", multiple=True, help="TYPE=WEIGHT: query weight of a cross type's matches ('primary' for the primary).")
@click.option("--baselines/--no-baselines", default=True, help="Also score popularity, Jaccard and implicit's item-item models.")
@cluster_options
@click.pass_context
def evaluate(
    ctx: click.Context,
    events: tuple[str, ...],
    config: BuildConfig,
    layout: Layout,
    split: Split,
    k: int,
    json_path: str | None,
    plot_path: str | None,
    use_es: bool,
    es: EsSettings,
    field_boost: tuple[str, ...],
    baselines: bool,
    run: ClusterRun,
) -> None:
    """Score a configuration and baselines on a temporal split of EVENTS (NDCG, precision, recall, MAP at k)."""
    import json

    from .es import connect_es
    from .evaluate import evaluate as run_evaluation
    from .evaluate import format_table, plot_metrics

    if use_es:
        connect_es(es).close()  # fail before the work
    with run.session(ctx.obj["debug"]):
        result = run_evaluation(
            list(events),
            config,
            split=split,
            k=k,
            layout=layout,
            boosts=_field_boosts(field_boost),
            es=es if use_es else None,
            baselines=baselines,
            show_progress=run.progress,
        )
    click.echo(format_table(result))
    if json_path is not None:
        with open(json_path, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2, default=str)
    if plot_path is not None:
        plot_metrics(result, plot_path)


_SERVICE_VARIABLE = "DASKREC_SERVICE"
"""How ``daskrec serve`` hands its options to the service's worker processes (no secrets in it)."""


@cli.command()
@es_options()
@click.option("--host", default="127.0.0.1", help="Address to listen on.")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8000, help="Port to listen on.")
@click.option("--workers", type=click.IntRange(min=1), default=1, help="Server processes.")
@click.option("--recent", type=click.IntRange(min=1), default=None, help="Events per field of a live history, for generations that do not record their build's --recent.")
@click.option("--event", "event_types", default=None, help="Primary event types of a live history (comma-separated or 'all'), for generations that do not record them.")
@click.option("--max-k", type=click.IntRange(min=1), default=ServiceConfig.max_k, help=_doc(ServiceConfig, "max_k"))
@click.option("--max-batch", type=click.IntRange(min=1), default=ServiceConfig.max_batch, help=_doc(ServiceConfig, "max_batch"))
def serve(
    es: EsSettings, alias: str, host: str, port: int, workers: int, recent: int | None, event_types: str | None, max_k: int, max_batch: int
) -> None:
    """Serve recommendations over HTTP (API key from DASKREC_API_KEY): similar items, users' live
    histories, events in; /docs lists the routes."""
    import json

    import uvicorn

    from .es import connect_es

    connect_es(es).close()  # a wrong URL, certificate or credentials fails now
    options = {"alias": alias, "max_k": max_k, "max_batch": max_batch}
    if recent is not None:
        options["recent"] = recent
    if event_types is not None:
        options["event_types"] = _event_types(event_types)
    connection = {"url": es.url, "ca_certs": es.ca_certs, "verify_certs": es.verify_certs, "request_timeout": es.request_timeout}
    os.environ[_SERVICE_VARIABLE] = json.dumps({"service": options, "es": connection})
    click.echo(f"daskrec: serving {alias!r} from {es.url} on http://{host}:{port} (docs at /docs)", err=True)
    uvicorn.run("daskrec.cli:service_app", factory=True, host=host, port=port, workers=workers, log_level="warning",
                proxy_headers=False)  # nothing reads the client's address (no access log): the middleware would only cost time


def service_app() -> Any:
    """The service of ``daskrec serve``, made in each server process from its environment."""
    import json

    from .service import create_app

    handed = json.loads(os.environ[_SERVICE_VARIABLE])
    service = handed["service"]
    if service.get("event_types") is not None:
        service["event_types"] = tuple(service["event_types"])
    config = ServiceConfig(**service, api_key=os.environ.get("DASKREC_API_KEY") or None)
    connection = handed["es"]
    return create_app(_settings_from_environment(connection["url"], connection["ca_certs"], connection["verify_certs"], connection["request_timeout"]), config)


@cli.command("export-events")
@click.argument("out")
@click.option("--after", type=click.IntRange(min=-1), default=-1, show_default=True,
              help="Only the events stored after this operation: the `through` a previous export printed (-1: all).")
@es_options()
def export_events_command(out: str, after: int, es: EsSettings, alias: str) -> None:
    """Write the events the service received to OUT (CSV, the events-log layout, local or an
    fsspec URL), for the next build or update; prints the operation it reached, for --after."""
    from .es import connect_es
    from .events import export_events

    with connect_es(es) as client:
        exported = export_events(client, alias, out, after)
    click.echo(f"{exported.events} events -> {out} (the store's operations through {exported.through}; next time --after {exported.through})")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return its exit code (2 for a daskrec error, 1 for any other failure)."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    if argv is None:  # this process is the command: let it exit without a last collection
        # CPython's final garbage collection walks every object numba, pandas and Dask made: ~0.5 s
        # of a 4 s small build here (measured; README, "Benchmarks"). Freezing them first skips
        # that walk; the OS frees the memory. Every exit handler still runs (those registered
        # later, such as distributed's, before this one).
        atexit.register(gc.freeze)
    try:
        cli.main(args=argv, prog_name="daskrec", standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except click.ClickException as err:
        err.show()
        return 2
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 1
    except DaskrecError as err:
        if debug:
            traceback.print_exc()
        click.echo(f"daskrec: error: {err}", err=True)
        return 2
    except Exception as err:  # noqa: BLE001 - the CLI owns the exit code of any failure
        if debug:
            traceback.print_exc()
        click.echo(f"daskrec: unexpected {type(err).__name__}: {err} (rerun with --debug for the traceback)", err=True)
        return 1
    return 0



