#!/usr/bin/env bash
# Fetch, cache, start and stop single-node Elasticsearch nodes on loopback for daskrec.
#
#   cluster/elasticsearch/es.sh up             # fetch (Maven Central) + unpack once, start, wait for health, print URL
#   cluster/elasticsearch/es.sh down           # stop it (by pid)
#   cluster/elasticsearch/es.sh url            # print the URL
#   cluster/elasticsearch/es.sh secure-up      # a second node with security on: HTTPS with a private CA,
#                                              # file-realm users with least-privilege roles; prints its URL
#   cluster/elasticsearch/es.sh secure-down    # stop the secured node
#   cluster/elasticsearch/es.sh secure-env     # print the secured node's settings (URL, CA file, users)
#   cluster/elasticsearch/es.sh fetch          # only fetch and unpack (before starting both nodes at once)
#
# The secured node keeps its CA, node certificate, users and roles in $ES_HOME_DIR/secure-$ES_SECURE_PORT
# (made on first start, kept after): `secure-env` prints where, as shell variables the tests read.
# Its roles (cluster/elasticsearch/roles.yml) are what an operator grants daskrec in production.
#
# Environment: ES_PORT (9200), ES_SECURE_PORT (9202), ES_HEAP (512m), ES_HOME_DIR (.cache/elasticsearch,
# kept between runs), ES_VERSION (default from cluster/.env), JAVA_HOME (default: the newest JDK >= 21
# under /usr/lib/jvm), ES_EXTRA (more -E settings, e.g. "-Ethread_pool.write.queue_size=2").
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck disable=SC1091
. "$here/../.env"
version=${ES_VERSION}
port=${ES_PORT:-9200}
secure_port=${ES_SECURE_PORT:-9202}
heap=${ES_HEAP:-512m}
home=${ES_HOME_DIR:-$root/.cache/elasticsearch}
dist="$home/elasticsearch-$version"
es_user=daskrec-es
secure="$home/secure-$secure_port"
case "${1:-}" in
  secure-*) port=$secure_port; scheme=https; state="$secure" ;;
  *) scheme=http; state="$home/run-$port" ;;
esac
url="$scheme://127.0.0.1:$port"

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
  python3 - "$url" "$secure/config/certs/ca/ca.crt" "$secure/credentials.env" <<'PY'
import base64, json, ssl, sys, urllib.request
url, ca, credentials = sys.argv[1:]
request = urllib.request.Request(url + "/_cluster/health?wait_for_status=yellow&timeout=1s")
context = None
if url.startswith("https://"):
    context = ssl.create_default_context(cafile=ca)
    users = dict(line.strip().split("=", 1) for line in open(credentials) if "=" in line)
    token = base64.b64encode(f"{users['ES_SECURE_ADMIN_USER']}:{users['ES_SECURE_ADMIN_PASSWORD']}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
try:
    with urllib.request.urlopen(request, timeout=3, context=context) as r:
        sys.exit(0 if json.load(r)["status"] in ("yellow", "green") else 1)
except Exception:
    sys.exit(1)
PY
}

# The secured node's own config folder: certificates from elasticsearch-certutil (a CA, and a node
# certificate for 127.0.0.1 and localhost), file-realm users with random passwords, file-based roles.
prepare_secure() {
  local java_home=$1 conf="$secure/config"
  mkdir -p "$secure"
  if [ ! -s "$conf/certs/node/node.key" ]; then
    rm -rf "$conf" && cp -r "$dist/config" "$conf" && mkdir -p "$conf/certs"
    local tool_env=(env ES_JAVA_HOME="$java_home" ES_PATH_CONF="$conf")
    "${tool_env[@]}" "$dist/bin/elasticsearch-certutil" ca --pem --silent --out "$secure/ca.zip" >/dev/null
    (cd "$conf/certs" && python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall('.')" "$secure/ca.zip")
    "${tool_env[@]}" "$dist/bin/elasticsearch-certutil" cert --pem --silent --name node \
      --ca-cert "$conf/certs/ca/ca.crt" --ca-key "$conf/certs/ca/ca.key" \
      --ip 127.0.0.1 --dns localhost --out "$secure/node.zip" >/dev/null
    (cd "$conf/certs" && python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall('.')" "$secure/node.zip")
    # A second CA that signed nothing here: what a client holding the wrong CA file sees (tests).
    "${tool_env[@]}" "$dist/bin/elasticsearch-certutil" ca --pem --silent --out "$secure/other.zip" >/dev/null
    mkdir -p "$secure/other" && (cd "$secure/other" && python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall('.')" "$secure/other.zip")
    rm -f "$secure/ca.zip" "$secure/node.zip" "$secure/other.zip"
    : > "$conf/users" && : > "$conf/users_roles"
    : > "$secure/credentials.env" && chmod 600 "$secure/credentials.env"
  fi
  # Roles and users on every start, so that a node prepared by an older checkout gets new ones.
  cp "$here/roles.yml" "$conf/roles.yml"
  local credentials="$secure/credentials.env"
  for pair in admin:superuser writer:daskrec_writer reader:daskrec_reader service:daskrec_service; do
    local name=${pair%%:*} role=${pair#*:} password upper
    upper=$(echo "$name" | tr '[:lower:]' '[:upper:]')
    grep -q "^ES_SECURE_${upper}_USER=" "$credentials" && continue
    password=$(python3 -c "import secrets; print(secrets.token_urlsafe(18))")
    env ES_JAVA_HOME="$java_home" ES_PATH_CONF="$conf" "$dist/bin/elasticsearch-users" useradd "daskrec_$name" -p "$password" -r "$role" >/dev/null
    printf 'ES_SECURE_%s_USER=daskrec_%s\nES_SECURE_%s_PASSWORD=%s\n' "$upper" "$name" "$upper" "$password" >> "$credentials"
  done
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

start() {
  local java_home=$1; shift
  stop
  mkdir -p "$state/data" "$state/logs"
  # shellcheck disable=SC2086
  as_es_user env ES_JAVA_HOME="$java_home" ES_JAVA_OPTS="-Xms$heap -Xmx$heap ${ES_JAVA_OPTS:-}" "$@" \
    "$dist/bin/elasticsearch" -d -p "$state/es.pid" \
    -Ediscovery.type=single-node -Enetwork.host=127.0.0.1 -Ehttp.port="$port" \
    -Ecluster.routing.allocation.disk.threshold_enabled=false \
    -Epath.data="$state/data" -Epath.logs="$state/logs" -Ecluster.name="daskrec-$port" ${node_settings} ${ES_EXTRA:-} \
    >"$state/start.log" 2>&1 || { cat "$state/start.log" >&2; exit 1; }
  for _ in $(seq 180); do
    if healthy; then echo "$url"; return 0; fi
    if [ -s "$state/es.pid" ] && ! kill -0 "$(cat "$state/es.pid")" 2>/dev/null; then break; fi
    sleep 1
  done
  echo "es.sh: Elasticsearch did not become healthy at $url; last log lines:" >&2
  tail -n 30 "$state/logs/daskrec-$port.log" "$state/start.log" >&2 2>/dev/null || true
  exit 1
}

running() {
  [ -s "$state/es.pid" ] && kill -0 "$(cat "$state/es.pid")" 2>/dev/null && healthy
}

case "${1:-}" in
  up)
    if running; then echo "$url"; exit 0; fi
    fetch
    node_settings="-Expack.security.enabled=false"
    start "$(find_java)"
    ;;
  secure-up)
    if running; then echo "$url"; exit 0; fi
    fetch
    java_home=$(find_java)
    prepare_secure "$java_home"
    certs="$secure/config/certs"
    node_settings="-Expack.security.enabled=true -Expack.security.http.ssl.enabled=true \
      -Expack.security.http.ssl.key=$certs/node/node.key -Expack.security.http.ssl.certificate=$certs/node/node.crt \
      -Expack.security.http.ssl.certificate_authorities=$certs/ca/ca.crt -Expack.security.transport.ssl.enabled=false \
      -Expack.security.authc.api_key.enabled=false"
    start "$java_home" ES_PATH_CONF="$secure/config"
    ;;
  down | secure-down) stop ;;
  url) echo "$url" ;;
  secure-env)
    [ -s "$secure/credentials.env" ] || { echo "es.sh: no secured node was prepared; run es.sh secure-up" >&2; exit 1; }
    echo "ES_SECURE_URL=$url"
    echo "ES_SECURE_CA=$secure/config/certs/ca/ca.crt"
    echo "ES_SECURE_OTHER_CA=$secure/other/ca/ca.crt"
    cat "$secure/credentials.env"
    ;;
  fetch) fetch ;;
  *) echo "usage: cluster/elasticsearch/es.sh up|down|url|secure-up|secure-down|secure-env|fetch" >&2; exit 2 ;;
esac
