# Sourced by the run.sh of each Node.js server in servers/ (medplum, oidc): checks Node.js, installs the
# server's pinned npm packages (npm ci) when node_modules is missing or older than package-lock.json, and
# then runs `node [FLAGS] server.mjs PORT` in the foreground, in place of the shell.
#
#   run_node_server NAME PORT [NODE_FLAG ...]      (from the server's own directory)

run_node_server() {
  local name="$1" port="$2"
  shift 2
  if ! command -v node >/dev/null 2>&1; then
    echo "$name run.sh: node is not installed" >&2
    exit 127
  fi
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  if (( major < 20 )); then
    echo "$name run.sh: Node.js >= 20 required, found $(node --version)" >&2
    exit 1
  fi
  if _node_install_needed; then
    (
      # Two starts at once (CI and a test fixture, or two servers) must not run npm ci over each other.
      if command -v flock >/dev/null 2>&1; then flock 9; fi
      if _node_install_needed; then
        echo "$name run.sh: npm ci" >&2
        npm ci --no-audit --no-fund --loglevel=error >&2
        touch node_modules/.package-lock.json
      fi
    ) 9>"$PWD/.npm-ci.lock"
  fi
  exec node "$@" server.mjs "$port"
}

_node_install_needed() {
  [[ ! -f node_modules/.package-lock.json ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]
}
