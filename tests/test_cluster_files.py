"""The deployment files in cluster/ agree with each other (no Docker engine runs here to start them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # starts processes

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


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_compose_dask_services_share_the_daskrec_image_and_the_data_volume() -> None:
    services = yaml.safe_load((CLUSTER / "docker-compose.yml").read_text())["services"]
    scheduler, worker, job = services["scheduler"], services["worker"], services["build-job"]
    assert scheduler["image"] == worker["image"] == job["image"]  # workers run daskrec's tasks
    assert (CLUSTER / scheduler["build"]["context"] / scheduler["build"]["dockerfile"]).resolve().exists()
    port = option(scheduler["command"], "--port")
    assert worker["command"][:3] == ["dask", "worker", f"tcp://scheduler:{port}"]
    assert job["command"][:2] == ["daskrec", "build"]
    assert option(job["command"], "--scheduler") == f"tcp://scheduler:{port}"
    assert option(job["command"], "--es-url") == "http://elasticsearch:9200"
    assert worker["volumes"] == job["volumes"]  # the job's inputs and output are the workers' too
    assert job["depends_on"]["elasticsearch"]["condition"] == "service_healthy"


def test_dockerfile_installs_the_package() -> None:
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert "COPY daskrec ./daskrec" in dockerfile and "pip install --no-cache-dir ." in dockerfile
    assert "ENV GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in dockerfile  # schedulers and workers too


def test_helm_values_match_the_chart_schema_and_the_job() -> None:
    import jsonschema

    values = yaml.safe_load((CLUSTER / "kubernetes" / "values.yaml").read_text())
    schema = json.loads((CLUSTER / "kubernetes" / "values.schema.json").read_text())
    jsonschema.validate(values, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**values, "worker": {**values["worker"], "replica": 2}}, schema)
    job = yaml.safe_load((CLUSTER / "kubernetes" / "build-job.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    image = values["worker"]["image"]
    assert container["image"] == f"{image['repository']}:{image['tag']}" == "{repository}:{tag}".format(
        **values["scheduler"]["image"]
    )
    assert option(container["command"], "--scheduler") == f"tcp://daskrec-scheduler:{values['scheduler']['servicePort']}"


def test_slurm_example_renders_a_job_script() -> None:
    sys.path.insert(0, str(CLUSTER / "slurm"))
    try:
        from build_on_slurm import make_cluster
    finally:
        sys.path.pop(0)
    cluster = make_cluster(8, "32GiB", "normal", "proj", "01:00:00", "/tmp")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p normal", "#SBATCH -A proj", "#SBATCH --cpus-per-task=8", "#SBATCH --exclusive"):
        assert line in script
    assert "--nthreads 8" in script and "--memory-limit" in script
    assert "export GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in script  # as daskrec.allocator gives the command
