#!/usr/bin/env bash
# Starts the oidc-provider authorization server (SMART Backend Services tests) in the FOREGROUND.
#
#   servers/oidc/run.sh [PORT]      PORT defaults to $OIDC_PORT, then 18090
#
# Issuer (and base URL): http://127.0.0.1:PORT, bound to 127.0.0.1 only. Ready when
# GET /.well-known/openid-configuration answers 200. Stop it with SIGTERM or SIGINT.
# Installs the pinned npm packages (npm ci) first when node_modules is missing or
# older than package-lock.json (servers/lib/node-server.sh).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
source ../lib/node-server.sh

run_node_server oidc "${1:-${OIDC_PORT:-18090}}"
