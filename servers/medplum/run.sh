#!/usr/bin/env bash
# Starts the in-memory Medplum FHIR R4 test server in the FOREGROUND.
#
#   servers/medplum/run.sh [PORT]      PORT defaults to $MEDPLUM_PORT, then 18103
#
# Base URL: http://127.0.0.1:PORT/fhir (bound to 127.0.0.1 only). Ready when
# GET /fhir/metadata answers 200. Stop it with SIGTERM or SIGINT.
# Installs the pinned npm packages (npm ci) first when node_modules is missing
# or older than package-lock.json.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
port="${1:-${MEDPLUM_PORT:-18103}}"

if ! command -v node >/dev/null 2>&1; then
  echo "medplum run.sh: node is not installed" >&2
  exit 127
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if (( major < 20 )); then
  echo "medplum run.sh: Node.js >= 20 required, found $(node --version)" >&2
  exit 1
fi

install_needed() {
  [[ ! -f node_modules/.package-lock.json ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]
}

if install_needed; then
  (
    # Two servers starting at once must not run npm ci over each other.
    if command -v flock >/dev/null 2>&1; then flock 9; fi
    if install_needed; then
      echo "medplum run.sh: npm ci" >&2
      npm ci --no-audit --no-fund --loglevel=error >&2
      touch node_modules/.package-lock.json
    fi
  ) 9>"$here/.npm-ci.lock"
fi

# @medplum/core needs a global WebSocket at load time: Node 20 only has it behind a flag.
flags=()
if ! node -e 'process.exit(typeof WebSocket === "undefined" ? 1 : 0)'; then
  flags+=(--experimental-websocket)
fi

exec node ${flags[@]+"${flags[@]}"} server.mjs "$port"
