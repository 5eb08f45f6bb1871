#!/usr/bin/env bash
# Self-test of the Medplum test server: starts a fresh server with run.sh on a
# loopback port, waits for /fhir/metadata, runs selftest.mjs against it, prints
# start time and memory, and stops the server.
#
#   servers/medplum/selftest.sh [PORT]     PORT defaults to $MEDPLUM_SELFTEST_PORT, then 18197
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${1:-${MEDPLUM_SELFTEST_PORT:-18197}}"
base="http://127.0.0.1:${port}/fhir"

probe() {
  curl -fsS -o /dev/null --max-time 2 "${base}/metadata" 2>/dev/null
}

if probe; then
  echo "selftest: something already answers on port ${port}; pick another port" >&2
  exit 2
fi

log="$(mktemp)"
started_ns="$(date +%s%N)"
"${here}/run.sh" "${port}" >"${log}" 2>&1 &
pid=$!

cleanup() {
  if kill -0 "${pid}" 2>/dev/null; then
    kill -TERM "${pid}" 2>/dev/null || true
    wait "${pid}" 2>/dev/null || true
  fi
  rm -f "${log}"
}
trap cleanup EXIT

# Up to 120 s: the first start may run npm ci.
for _ in $(seq 1 1200); do
  if probe; then
    break
  fi
  if ! kill -0 "${pid}" 2>/dev/null; then
    echo "selftest: server exited before becoming ready:" >&2
    cat "${log}" >&2
    exit 1
  fi
  sleep 0.1
done
if ! probe; then
  echo "selftest: server not ready after 120 s" >&2
  cat "${log}" >&2
  exit 1
fi
ready_ms=$(( ($(date +%s%N) - started_ns) / 1000000 ))
sed 's/^/server: /' "${log}"
echo "selftest: ready after ${ready_ms} ms (launch to first 200 from /fhir/metadata), rss $(( $(ps -o rss= -p "${pid}") / 1024 )) MiB"

rc=0
node "${here}/selftest.mjs" "${base}" || rc=$?
echo "selftest: server rss after the tests $(( $(ps -o rss= -p "${pid}") / 1024 )) MiB"
exit "${rc}"
