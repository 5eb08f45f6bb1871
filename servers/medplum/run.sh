#!/usr/bin/env bash
# Starts the in-memory Medplum FHIR R4 test server in the FOREGROUND.
#
#   servers/medplum/run.sh [PORT]      PORT defaults to $MEDPLUM_PORT, then 18103
#
# Base URL: http://127.0.0.1:PORT/fhir (bound to 127.0.0.1 only). Ready when
# GET /fhir/metadata answers 200. Stop it with SIGTERM or SIGINT.
# Installs the pinned npm packages (npm ci) first when node_modules is missing
# or older than package-lock.json (servers/lib/node-server.sh).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
source ../lib/node-server.sh

flags=()
# @medplum/core needs a global WebSocket at load time: Node 20 only has it behind a flag.
if command -v node >/dev/null 2>&1 && ! node -e 'process.exit(typeof WebSocket === "undefined" ? 1 : 0)'; then
  flags+=(--experimental-websocket)
fi

run_node_server medplum "${1:-${MEDPLUM_PORT:-18103}}" ${flags[@]+"${flags[@]}"}
