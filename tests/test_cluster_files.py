"""The deployment files in cluster/ agree with each other (no Docker engine runs here to start them)."""

from __future__ import annotations

from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


def pinned_version() -> str:
    lines = [line for line in (CLUSTER / ".env").read_text().splitlines() if line.startswith("ES_VERSION=")]
    assert len(lines) == 1
    return lines[0].split("=", 1)[1]


def test_compose_file_runs_the_pinned_official_image() -> None:
    compose = yaml.safe_load((CLUSTER / "docker-compose.yml").read_text())
    service = compose["services"]["elasticsearch"]
    assert service["image"] == "docker.elastic.co/elasticsearch/elasticsearch:${ES_VERSION}"
    assert pinned_version().startswith("9.")
    assert service["environment"]["discovery.type"] == "single-node"
    assert service["ports"] == ["127.0.0.1:9200:9200"]
    assert "healthcheck" in service


def test_the_script_reads_the_same_pin() -> None:
    script = (CLUSTER / "elasticsearch" / "es.sh").read_text()
    assert '. "$here/../.env"' in script and "version=${ES_VERSION}" in script
