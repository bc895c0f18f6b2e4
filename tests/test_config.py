"""Configs: SPEC defaults, validation naming the field, and the CLI reading its defaults from them."""

from __future__ import annotations

import dataclasses

import click
import pytest
from click.testing import CliRunner

from daskrec import (
    BuildConfig,
    ClusterConfig,
    ConfigError,
    IndicatorConfig,
    IngestConfig,
)
from daskrec.cli import build_options, cli
from daskrec.config import PRESETS, TUTORIAL


def test_tutorial_preset_is_the_spec_recipe_and_defaults_are_the_measured_best() -> None:
    config = TUTORIAL.build
    assert config.ingest.event_types == ("transaction",) and config.ingest.recent == 50
    assert config.indicators.top_k == 50 and config.indicators.min_llr == 5.0
    assert config.indicators.llr_table == "cooccurrence" and not config.indicators.downsamples
    assert TUTORIAL.layout == "keyword"
    defaults = BuildConfig()
    assert (defaults.ingest.recent, defaults.indicators.top_k, defaults.indicators.min_llr) == (200, 100, 3.0)
    assert defaults.indicators.llr_table == "users" and PRESETS["default"].layout == "weighted"


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
        (lambda: IndicatorConfig(llr_table="cooccurrence", max_per_user=10), "max_per_user"),
        (lambda: IndicatorConfig(llr_table="users", max_per_item=0), "max_per_item"),
        (lambda: ClusterConfig(workers=0), "workers"),
        (lambda: ClusterConfig(scheduler="tcp://127.0.0.1:8786", workers=2), "workers"),
        (lambda: ClusterConfig(dashboard=False, memory_limit="1GB"), "dashboard"),
    ],
)
def test_validation_names_the_field(make: object, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        make()  # type: ignore[operator]


def test_cli_help_shows_the_config_defaults() -> None:
    text = " ".join(CliRunner().invoke(cli, ["build", "--help"], terminal_width=300).output.split())
    defaults, tutorial = BuildConfig(), TUTORIAL.build
    for flag, default, spec in [
        ("--recent", defaults.ingest.recent, tutorial.ingest.recent),
        ("--top-k", defaults.indicators.top_k, tutorial.indicators.top_k),
        ("--min-llr", defaults.indicators.min_llr, tutorial.indicators.min_llr),
        ("--llr-table", defaults.indicators.llr_table, tutorial.indicators.llr_table),
        ("--event", "transaction", "transaction"),
    ]:
        described = text.split(f" {flag} ", 1)[1].split(" --", 1)[0]
        assert f"[default: {default}; tutorial: {spec}]" in described


def test_presets_give_every_build_option_and_the_command_line_wins() -> None:
    seen: list[tuple[BuildConfig, str]] = []

    @click.command()
    @build_options
    def show(config: BuildConfig, layout: str) -> None:
        seen.append((config, layout))

    runner = CliRunner()
    assert runner.invoke(show, []).exit_code == 0
    assert runner.invoke(show, ["--preset", "tutorial"]).exit_code == 0
    assert runner.invoke(show, ["--preset", "tutorial", "--event", "all", "--min-llr", "2", "--layout", "weighted"]).exit_code == 0
    assert seen[0] == (BuildConfig(), "weighted")
    assert seen[1] == (TUTORIAL.build, "keyword")
    mixed, layout = seen[2]
    assert mixed.ingest.event_types is None and mixed.ingest.recent == 50 and layout == "weighted"
    assert mixed.indicators == dataclasses.replace(TUTORIAL.build.indicators, min_llr=2.0)
