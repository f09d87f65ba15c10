#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (real runc, nats-server, registry, ctr).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
# The lint (boundaries between processes, import cycles, no `any` in handlers) fails the run before any test.
npm run lint --silent
# Temporary roots on /var/tmp: file creation on /tmp is much slower on these machines.
export TMPDIR="${TMPDIR:-/var/tmp}"
exec node dist/test/run.js "$@"
