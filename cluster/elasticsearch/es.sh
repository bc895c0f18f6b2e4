#!/usr/bin/env bash
# Fetch, cache, start and stop a single-node Elasticsearch on loopback for daskrec.
#
#   cluster/elasticsearch/es.sh up      # fetch (Maven Central) + unpack once, start, wait for health, print URL
#   cluster/elasticsearch/es.sh down    # stop it (by pid)
#   cluster/elasticsearch/es.sh url     # print the URL
#
# Environment: ES_PORT (9200), ES_HEAP (512m), ES_HOME_DIR (.cache/elasticsearch, kept between runs),
# ES_VERSION (default from cluster/.env), JAVA_HOME (default: the newest JDK >= 21 under /usr/lib/jvm),
# ES_EXTRA (more -E settings, e.g. "-Ethread_pool.write.queue_size=2").
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck disable=SC1091
. "$here/../.env"
version=${ES_VERSION}
port=${ES_PORT:-9200}
heap=${ES_HEAP:-512m}
home=${ES_HOME_DIR:-$root/.cache/elasticsearch}
dist="$home/elasticsearch-$version"
state="$home/run-$port"
es_user=daskrec-es
url="http://127.0.0.1:$port"

find_java() {
  if [ -n "${JAVA_HOME:-}" ] && "$JAVA_HOME/bin/java" -version 2>&1 | grep -qE 'version "(2[1-9]|[3-9][0-9])'; then
    echo "$JAVA_HOME"; return
  fi
  for candidate in $(ls -d /usr/lib/jvm/*/ 2>/dev/null | sort -rV); do
    if "$candidate/bin/java" -version 2>&1 | grep -qE 'version "(2[1-9]|[3-9][0-9])'; then
      echo "${candidate%/}"; return
    fi
  done
  echo "es.sh: Elasticsearch $version needs Java 21 or newer; none found under /usr/lib/jvm (set JAVA_HOME)" >&2
  exit 1
}

fetch() {
  [ -x "$dist/bin/elasticsearch" ] && return
  mkdir -p "$home"
  local zip="$home/elasticsearch-$version.zip"
  if [ ! -s "$zip" ]; then
    echo "es.sh: fetching org.elasticsearch.distribution.integ-test-zip:elasticsearch:$version:zip" >&2
    mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
      "-Dartifact=org.elasticsearch.distribution.integ-test-zip:elasticsearch:$version:zip" \
      "-DoutputDirectory=$home" -Dmdep.overWriteIfNewer=true >&2
  fi
  rm -rf "$dist.tmp" && mkdir -p "$dist.tmp"
  (cd "$dist.tmp" && python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall('.')" "$zip")
  chmod +x "$dist.tmp"/elasticsearch-*/bin/* "$dist.tmp"/elasticsearch-*/jdk/bin/* 2>/dev/null || true
  mv "$dist.tmp"/elasticsearch-* "$dist" && rm -rf "$dist.tmp"
}

# Elasticsearch refuses to run as root; CI runs as root, so run it as a system user then.
as_es_user() {
  if [ "$(id -u)" -ne 0 ]; then "$@"; return; fi
  id -u "$es_user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$es_user"
  chown -R "$es_user" "$dist" "$state"
  setpriv --reuid="$es_user" --regid="$(id -g "$es_user")" --clear-groups "$@"
}

healthy() {
  python3 - "$url" <<'PY'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/_cluster/health?wait_for_status=yellow&timeout=1s", timeout=3) as r:
        sys.exit(0 if json.load(r)["status"] in ("yellow", "green") else 1)
except Exception:
    sys.exit(1)
PY
}

stop() {
  local pidfile="$state/es.pid"
  [ -s "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-}" in
  up)
    if [ -s "$state/es.pid" ] && kill -0 "$(cat "$state/es.pid")" 2>/dev/null && healthy; then
      echo "$url"; exit 0
    fi
    fetch
    java_home=$(find_java)
    stop
    mkdir -p "$state/data" "$state/logs"
    # shellcheck disable=SC2086
    as_es_user env ES_JAVA_HOME="$java_home" ES_JAVA_OPTS="-Xms$heap -Xmx$heap ${ES_JAVA_OPTS:-}" \
      "$dist/bin/elasticsearch" -d -p "$state/es.pid" \
      -Ediscovery.type=single-node -Enetwork.host=127.0.0.1 -Ehttp.port="$port" -Expack.security.enabled=false \
      -Ecluster.routing.allocation.disk.threshold_enabled=false \
      -Epath.data="$state/data" -Epath.logs="$state/logs" -Ecluster.name="daskrec-$port" ${ES_EXTRA:-} \
      >"$state/start.log" 2>&1 || { cat "$state/start.log" >&2; exit 1; }
    for _ in $(seq 180); do
      if healthy; then echo "$url"; exit 0; fi
      if [ -s "$state/es.pid" ] && ! kill -0 "$(cat "$state/es.pid")" 2>/dev/null; then break; fi
      sleep 1
    done
    echo "es.sh: Elasticsearch did not become healthy at $url; last log lines:" >&2
    tail -n 30 "$state/logs/daskrec-$port.log" "$state/start.log" >&2 2>/dev/null || true
    exit 1
    ;;
  down) stop ;;
  url) echo "$url" ;;
  *) echo "usage: cluster/elasticsearch/es.sh up|down|url" >&2; exit 2 ;;
esac
