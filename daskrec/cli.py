"""The ``daskrec`` command: parse options into configs, call the library, own the exit codes.

Exit codes: 0 success, 2 a daskrec error (bad input or options: the message says which and
how to fix it), 1 anything else. ``--debug`` adds the traceback.
"""

from __future__ import annotations

import logging
import sys
import traceback

import click

from .config import ALL_EVENTS, BuildConfig, ClusterConfig, IndicatorConfig, IngestConfig
from .errors import DaskrecError

log = logging.getLogger(__name__)

_INGEST = IngestConfig()
_INDICATORS = IndicatorConfig()
_CLUSTER = ClusterConfig()


def _doc(config: type, name: str) -> str:
    """Help text of a config field: the first sentence of its docstring in the source."""
    import inspect

    source = inspect.getsource(config)
    after = source.split(f"\n    {name}:", 1)[1]
    text = after.split('"""', 2)[1]
    return " ".join(text.replace("``", "").split())


def _event_types(value: str) -> tuple[str, ...] | None:
    types = tuple(t.strip() for t in value.split(",") if t.strip())
    return None if types == (ALL_EVENTS,) else types


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="daskrec")
@click.option("-v", "--verbose", count=True, help="Log other libraries too (-vv: daskrec debug messages).")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, debug: bool) -> None:
    """daskrec: item-to-item recommendations from an events log (LLR indicators, on Dask)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("daskrec").setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("events", nargs=-1, required=True)
@click.option("--out", "out_dir", required=True, help="Folder for indicators.parquet and manifest.json.")
@click.option(
    "--event",
    "event_types",
    default=",".join(_INGEST.event_types or (ALL_EVENTS,)),
    help=f"Primary event type(s), comma-separated, or '{ALL_EVENTS}'.",
)
@click.option("--recent", type=click.IntRange(min=1), default=_INGEST.recent, help=_doc(IngestConfig, "recent"))
@click.option("--top-k", type=click.IntRange(min=1), default=_INDICATORS.top_k, help=_doc(IndicatorConfig, "top_k"))
@click.option("--min-llr", type=float, default=_INDICATORS.min_llr, help=_doc(IndicatorConfig, "min_llr"))
@click.option(
    "--llr-table",
    type=click.Choice(["cooccurrence", "users"]),
    default=_INDICATORS.llr_table,
    help="cooccurrence: the SPEC's table of co-occurrence sums; users: Mahout's table of user counts.",
)
@click.option("--max-per-user", type=click.IntRange(min=1), default=None, help=_doc(IndicatorConfig, "max_per_user"))
@click.option("--max-per-item", type=click.IntRange(min=1), default=None, help=_doc(IndicatorConfig, "max_per_item"))
@click.option("--seed", type=int, default=_INDICATORS.seed, help=_doc(IndicatorConfig, "seed"))
@click.option(
    "--on-bad-rows", type=click.Choice(["error", "skip"]), default=_INGEST.on_bad_rows, help=_doc(IngestConfig, "on_bad_rows")
)
@click.option("--blocksize", type=int, default=_INGEST.blocksize, help=_doc(IngestConfig, "blocksize"))
@click.option("--scheduler", default=None, help=_doc(ClusterConfig, "scheduler"))
@click.option("--workers", type=click.IntRange(min=1), default=None, help=_doc(ClusterConfig, "workers"))
@click.option("--threads", type=click.IntRange(min=1), default=None, help=_doc(ClusterConfig, "threads"))
@click.option("--memory-limit", default=None, help=_doc(ClusterConfig, "memory_limit"))
@click.option("--dashboard-address", default=":8787", help="Where a LocalCluster serves its dashboard.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@click.pass_context
def build(
    ctx: click.Context,
    events: tuple[str, ...],
    out_dir: str,
    event_types: str,
    recent: int,
    top_k: int,
    min_llr: float,
    llr_table: str,
    max_per_user: int | None,
    max_per_item: int | None,
    seed: int,
    on_bad_rows: str,
    blocksize: int,
    scheduler: str | None,
    workers: int | None,
    threads: int | None,
    memory_limit: str | None,
    dashboard_address: str,
    progress: bool,
) -> None:
    """Compute every item's indicators from EVENTS (CSV/Parquet paths, globs or URLs)."""
    from .cluster import connect
    from .ingest import expand_inputs
    from .output import build_manifest, write_output
    from .pipeline import build_indicators

    config = BuildConfig(
        ingest=IngestConfig(
            event_types=_event_types(event_types),
            recent=recent,
            on_bad_rows=on_bad_rows,  # type: ignore[arg-type]
            blocksize=blocksize,
        ),
        indicators=IndicatorConfig(
            top_k=top_k,
            min_llr=min_llr,
            llr_table=llr_table,  # type: ignore[arg-type]
            max_per_user=max_per_user,
            max_per_item=max_per_item,
            seed=seed,
        ),
    )
    cluster = ClusterConfig(scheduler=scheduler, workers=workers, threads=threads, memory_limit=memory_limit)
    files = expand_inputs(events)  # fail on a bad path or header before starting any cluster
    quiet = logging.WARNING if ctx.obj["debug"] else logging.CRITICAL
    with connect(cluster, dashboard_address=dashboard_address, worker_log_level=quiet) as client:
        click.echo(f"Dask dashboard: {client.dashboard_link}", err=True)
        result = build_indicators(files, config, show_progress=progress)
    write_output(out_dir, result.table, build_manifest(events, config, result))
    counts = result.counts
    click.echo(
        f"{counts['items']} items ({counts['items_with_indicators']} with indicators) from "
        f"{counts['events_kept']} of {counts['events_read']} events, {counts['users']} users "
        f"in {sum(result.timings.values()):.1f}s -> {out_dir}"
    )


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
    frame = frame.assign(n=frame["indicators"].map(len)).sort_values(["n", "item"], ascending=[False, True])
    for row in frame.head(n_items).itertuples():
        pairs = ", ".join(f"{item} ({score:.1f})" for item, score in zip(row.indicators[:8], row.scores[:8]))
        more = f", ... {row.n - 8} more" if row.n > 8 else ""
        click.echo(f"{row.item}: {pairs}{more}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return its exit code (2 for a daskrec error, 1 for any other failure)."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
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



