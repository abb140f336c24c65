#!/usr/bin/env bash
# Runs every test file under test/ with node's test runner (TypeScript through tsx).
# Extra arguments narrow the run: scripts/test.sh test/engine
set -euo pipefail
cd "$(dirname "$0")/.."
roots=("${@:-test}")
mapfile -t files < <(find "${roots[@]}" -name '*.test.ts' | sort)
if [ ${#files[@]} -eq 0 ]; then echo "no test files under ${roots[*]}" >&2; exit 1; fi
exec node --import tsx --test --test-concurrency=2 --test-reporter=spec "${files[@]}"
