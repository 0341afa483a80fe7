#!/usr/bin/env bash
# Builds node-llama-cpp's native addon from the llama.cpp source its npm package ships (llama/gitRelease.bundle),
# for this machine's CPU, instead of the generic prebuilt binary. Offline: nothing is downloaded. node-llama-cpp
# picks the build up automatically afterwards (getLlama finds llama/localBuilds before the prebuilt binary).
# Measured on a 2-core EPYC with the bundled model: decode 1.3x and prompt reading 1.5x faster than the
# prebuilt binary (see BENCHMARKS.md).
#
# The build takes about 7 minutes on 2 cores, so it is cached outside the repository, keyed by the
# node-llama-cpp version and the platform:
#   ${SLUICE_CACHE_DIR:-$HOME/.cache/sluice}/node-llama-cpp-<version>-<platform>-<arch>/localBuilds
# A later run (a fresh clone, npm ci) copies the cached build back in seconds.
#
#   npm run build:engine            # build or restore
#   npm run build:engine -- --clean # remove the local build: back to the prebuilt binary
set -euo pipefail

log() { printf 'build-engine: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pkg="$repo_root/node_modules/node-llama-cpp"
[[ -f $pkg/package.json ]] || die "node-llama-cpp is not installed; run npm install first"
local_builds="$pkg/llama/localBuilds"

if [[ ${1:-} == --clean ]]; then
  rm -rf "$local_builds"
  log "removed $local_builds: the prebuilt binary is used again"
  exit 0
fi

version=$(node -p "require('$pkg/package.json').version")
key="node-llama-cpp-$version-$(node -p 'process.platform')-$(node -p 'process.arch')"
cache="${SLUICE_CACHE_DIR:-$HOME/.cache/sluice}/$key"

if [[ -d $cache/localBuilds ]]; then
  rm -rf "$local_builds"
  cp -R "$cache/localBuilds" "$local_builds"
  log "restored the cached build ($key)"
  exit 0
fi

for tool in cmake c++; do
  command -v "$tool" >/dev/null || die "$tool is required to build (apt-get install cmake g++)"
done
log "building llama.cpp for this CPU from the bundled source (about 7 minutes on 2 cores)"
(cd "$repo_root" && npx --no-install node-llama-cpp source download --gpu false --noUsageExample) >&2
[[ -d $local_builds ]] || die "the build finished without $local_builds"
mkdir -p "$(dirname "$cache")"
rm -rf "$cache.tmp" && mkdir -p "$cache.tmp"
cp -R "$local_builds" "$cache.tmp/localBuilds"
rm -rf "$cache" && mv "$cache.tmp" "$cache"
log "cached in $cache"
