"""Configs: SPEC defaults, validation naming the field, and the CLI reading its defaults from them."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from daskrec import (
    BuildConfig,
    ClusterConfig,
    ConfigError,
    IndicatorConfig,
    IngestConfig,
)
from daskrec.cli import cli


def test_spec_defaults() -> None:
    config = BuildConfig()
    assert config.ingest.event_types == ("transaction",) and config.ingest.recent == 50
    assert config.indicators.top_k == 50 and config.indicators.min_llr == 5.0
    assert config.indicators.llr_table == "cooccurrence" and not config.indicators.downsamples


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: IngestConfig(recent=0), "recent"),
        (lambda: IngestConfig(event_types=()), "event_types"),
        (lambda: IngestConfig(event_types=("all", "view")), "event_types"),
        (lambda: IngestConfig(on_bad_rows="ignore"), "on_bad_rows"),  # type: ignore[arg-type]
        (lambda: IndicatorConfig(top_k=0), "top_k"),
        (lambda: IndicatorConfig(min_llr=-1.0), "min_llr"),
        (lambda: IndicatorConfig(min_llr=float("nan")), "min_llr"),
        (lambda: IndicatorConfig(llr_table="dense"), "llr_table"),  # type: ignore[arg-type]
        (lambda: IndicatorConfig(max_per_user=10), "max_per_user"),
        (lambda: IndicatorConfig(llr_table="users", max_per_item=0), "max_per_item"),
        (lambda: ClusterConfig(workers=0), "workers"),
        (lambda: ClusterConfig(scheduler="tcp://127.0.0.1:8786", workers=2), "workers"),
    ],
)
def test_validation_names_the_field(make: object, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        make()  # type: ignore[operator]


def test_cli_help_shows_the_config_defaults() -> None:
    lines = CliRunner().invoke(cli, ["build", "--help"], terminal_width=300).output.splitlines()
    defaults = BuildConfig()
    for flag, default in [
        ("--recent", defaults.ingest.recent),
        ("--top-k", defaults.indicators.top_k),
        ("--min-llr", defaults.indicators.min_llr),
        ("--event", "transaction"),
    ]:
        line = next(line for line in lines if line.strip().startswith(flag + " "))
        assert f"[default: {default}" in line
