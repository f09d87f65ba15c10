#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole stack in the foreground (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
exec ./bin/flotilla up --config "${FLOTILLA_CONFIG:-deploy/flotilla.toml}"
