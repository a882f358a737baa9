#!/usr/bin/env bash
# The host side of MCP Apps for tests/test_apps.py: ext-apps' AppBridge from npm (versions pinned by
# tests/apps_host/package-lock.json), bundled for the browser by esbuild into tests/apps_host/dist/app-bridge.js
# (git-ignored, like node_modules/). Does nothing when the bundle is newer than the lock file and the entry.
set -euo pipefail
cd "$(dirname "$0")/../tests/apps_host"

if [[ -f dist/app-bridge.js && dist/app-bridge.js -nt package-lock.json && dist/app-bridge.js -nt entry.js ]]; then
  echo "apps-host: dist/app-bridge.js is up to date"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
fi
npm ci --no-audit --no-fund --loglevel=error
./node_modules/.bin/esbuild entry.js --bundle --format=iife --platform=browser --log-level=warning \
  --outfile=dist/app-bridge.js
echo "apps-host: built dist/app-bridge.js ($(wc -c <dist/app-bridge.js) bytes)"
