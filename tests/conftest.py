"""Shared fixtures: a hand-computed events log, a seeded rng, the real datasets, schedulers, and the
Elasticsearch node with a throwaway alias."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp
from elasticsearch import Elasticsearch

from daskrec import cooccurrence as co
from daskrec import BuildConfig, IngestConfig, build_indicators, build_manifest, generate_events, write_output
from daskrec.es import EsSettings, connect_es
from daskrec.synth import SynthConfig

SHIPPED_DATA = Path(__file__).resolve().parent / "data"
"""Real data whose terms allow it to ship with the repository (ml-latest-small)."""
DATA_VARIABLE = "DASKREC_DATA"
"""Environment variable naming the folder of the datasets that cannot ship (CI sets it)."""
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_DATASETS = ("ml-100k", "ml-latest-small", "lastfm-hetrec2011")
ES_URL = os.environ.get("DASKREC_ES_URL", "http://127.0.0.1:9200")

# Transactions: visitor 1 {10, 20}, 2 {10, 20, 30}, 3 {20, 30}, 4 {40, 40}; two views.
# Co-occurrences (diagonal zeroed): (10,20) = 2, (10,30) = 1, (20,30) = 2; item 40 has none.
# row_sum: 10 -> 3, 20 -> 4, 30 -> 3, 40 -> 0; total = 10.
SIMPLE_EVENTS = pd.DataFrame(
    {
        "timestamp": [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 11000, 12000],
        "visitorid": [1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 1, 2],
        "event": ["transaction"] * 7 + ["view"] + ["transaction"] * 2 + ["view", "view"],
        "itemid": [10, 20, 10, 20, 30, 20, 30, 10, 40, 40, 30, 40],
        "transactionid": [1, 2, 3, 4, 5, 6, 7, None, 8, 9, None, None],
    }
)
SIMPLE_COOCCURRENCE = {(10, 20): 2, (10, 30): 1, (20, 30): 2}
SIMPLE_ROW_SUM = {10: 3, 20: 4, 30: 3, 40: 0}
SIMPLE_TOTAL = 10


@pytest.fixture
def simple_events_csv(tmp_path: Path) -> Path:
    """The hand-computed log as a CSV file."""
    path = tmp_path / "simple.csv"
    SIMPLE_EVENTS.to_csv(path, index=False)
    return path


@pytest.fixture(autouse=True)
def _restore_daskrec_logging() -> Iterator[None]:
    """The CLI, run in process, gives daskrec's logger its own handler: take it away after each
    test, so that caplog sees daskrec's records in the tests that follow."""
    logger = logging.getLogger("daskrec")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    logger.handlers[:], logger.propagate = handlers, propagate
    logger.setLevel(level)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator."""
    return np.random.default_rng(20261129)


@pytest.fixture(params=["sync", "threads", "distributed"])
def scheduler(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test under each Dask scheduler; ``distributed`` is an in-process LocalCluster."""
    if request.param == "distributed":
        from distributed import Client

        with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0"):
            yield request.param
    else:
        with dask.config.set(scheduler=request.param):
            yield request.param


def real_dataset(name: str) -> Path:
    """Path of a real dataset's events.csv: the copy in tests/data when its terms let it ship,
    else ``$DASKREC_DATA/<name>/events.csv`` (default ../shared/data beside the checkout).

    A dataset that cannot ship and is not there skips the test with a one-line reason; when
    ``DASKREC_DATA`` is set (as CI sets it), its absence fails the test instead.
    """
    shipped = SHIPPED_DATA / name / "events.csv"
    if shipped.exists():
        return shipped
    folder = Path(os.environ.get(DATA_VARIABLE) or DEFAULT_DATA)
    path = folder / name / "events.csv"
    if not path.exists():
        if os.environ.get(DATA_VARIABLE):
            pytest.fail(f"{path} is missing, though {DATA_VARIABLE}={folder} names the data folder")
        pytest.skip(f"{name} cannot ship with daskrec; set {DATA_VARIABLE} to a folder holding {name}/events.csv")
    return path


@pytest.fixture(scope="session")
def es_settings() -> EsSettings:
    settings = EsSettings(url=ES_URL, max_retries=2, request_timeout=10)
    try:
        connect_es(settings).close()
    except Exception as err:  # noqa: BLE001
        pytest.fail(f"no Elasticsearch at {ES_URL} ({err}); start one with `make es-up`")
    return settings


@pytest.fixture
def alias(es_settings: EsSettings) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    with Elasticsearch(**es_settings.client_options()) as client:
        for index in client.indices.get(index=f"{name}-*", allow_no_indices=True):
            client.indices.delete(index=index)  # one by one: wildcard deletes are refused
        client.options(ignore_status=404).indices.delete_index_template(name=f"{name}-template")


EVERY_TYPE = BuildConfig(ingest=IngestConfig(event_types=None))
"""The default build over every event type (a generated log has few transactions)."""


def build_into(out_dir: Path, events: Path, config: BuildConfig = BuildConfig()) -> pa.Table:
    """Build ``events`` in memory, write it to ``out_dir`` as ``daskrec build`` would; the table."""
    result = build_indicators([str(events)], config)
    write_output(str(out_dir), result.table, build_manifest([str(events)], config, result.report))
    return result.table


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded 150k-event log."""
    path = tmp_path_factory.mktemp("es") / "events.csv"
    generate_events(str(path), SynthConfig(events=150_000, seed=3))
    return path


ES_SCRIPT = Path(__file__).resolve().parents[1] / "cluster" / "elasticsearch" / "es.sh"


@pytest.fixture(scope="session")
def secured() -> dict[str, str]:
    """The secured node of ``es.sh secure-up``: its URL, CA file, a CA that signed nothing here,
    and the users (``ES_SECURE_{ADMIN,WRITER,READER,SERVICE}_{USER,PASSWORD}``)."""
    import subprocess

    found = subprocess.run([str(ES_SCRIPT), "secure-env"], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.fail(f"no secured Elasticsearch ({found.stderr.strip()}); start one with `make es-up-secure`")
    values = dict(line.split("=", 1) for line in found.stdout.splitlines() if "=" in line)
    admin = EsSettings(url=values["ES_SECURE_URL"], ca_certs=values["ES_SECURE_CA"], username=values["ES_SECURE_ADMIN_USER"],
                       password=values["ES_SECURE_ADMIN_PASSWORD"], max_retries=1, request_timeout=10)
    try:
        connect_es(admin).close()
    except Exception as err:  # noqa: BLE001
        pytest.fail(f"the secured Elasticsearch at {admin.url} does not answer ({err}); start it with `make es-up-secure`")
    return values


def layouts_of(rows: sp.csr_array) -> Callable[[], co.Layouts]:
    """A block of ``rows`` as :func:`daskrec.cooccurrence.item_rows` takes it."""
    block = co.stack_blocks([rows])
    by_user, by_item = block.by_user, block.by_item
    return lambda: ((by_user.indptr, by_user.indices, by_user.data), (by_item.indptr, by_item.indices, by_item.data), by_user.shape)
