#!/usr/bin/env bash
# Builds dist/ from src/ only when something it is built from changed since the last build: npm start used to
# run tsc on every start (12-17 s); this check takes a few milliseconds. It is also the `prepare` step of
# npm ci, so a fresh clone is runnable without a separate build.
#
#   build-if-changed.sh            npm start: build if needed; no tsc and no dist/ is an error
#   build-if-changed.sh --prepare  npm ci/install: never fails, neither for want of tsc (npm ci --omit=dev
#                                  with a shipped dist/ has no TypeScript) nor over a type error
#   build-if-changed.sh --force    npm run build: a full build, whatever the stamp says
#
# "Changed" is an mtime newer than dist/.build-stamp, taken before the build starts, so an edit made while
# tsc runs is built next time. Folders count too: deleting or renaming a file changes its folder's mtime.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
stamp=dist/.build-stamp
buildinfo=dist/.tsbuildinfo
tsc=node_modules/typescript/bin/tsc
inputs=(src tsconfig.json package.json package-lock.json)

if [ "$mode" != --force ] && [ -f "$stamp" ] && [ -f dist/main.js ] &&
  [ -z "$(find "${inputs[@]}" -newer "$stamp" -print -quit)" ]; then
  exit 0
fi

if [ ! -f "$tsc" ]; then
  # A production install (devDependencies omitted): run what was shipped.
  if [ -f dist/main.js ]; then
    [ "$mode" = --prepare ] || echo "mailwarden: TypeScript is not installed; running the dist/ that is there" >&2
    exit 0
  fi
  echo "mailwarden: dist/ is missing and TypeScript is not installed (devDependencies omitted?):" \
    "run npm ci, or install a built dist/" >&2
  [ "$mode" = --prepare ] && exit 0
  exit 1
fi

mkdir -p dist
# --incremental skips re-checking unchanged files; its record says nothing of the outputs, so it is
# dropped whenever a full emit is wanted (dist/main.js gone, or --force).
if [ "$mode" = --force ] || [ ! -f dist/main.js ]; then rm -f "$buildinfo"; fi
next=$(mktemp dist/.build-stamp.XXXXXX)
trap 'rm -f "$next"' EXIT
if ! node "$tsc" -p tsconfig.json --incremental --tsBuildInfoFile "$buildinfo"; then
  # tsc still wrote dist/; without a new stamp the next npm start compiles again and shows the errors.
  # npm ci/install must not fail over work in progress: npm run typecheck is where type errors fail.
  [ "$mode" = --prepare ] && { echo "mailwarden: the build has type errors (above)" >&2; exit 0; }
  exit 1
fi
mv "$next" "$stamp"
