#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` and `llama-batched-bench` from the exact llama.cpp source that
# node-llama-cpp ships in its npm package (llama/gitRelease.bundle), so the peer in bench/peer.ts runs the
# same kernels as Sluice's engine. Offline: nothing is downloaded.
#
# The binaries are cached outside the repository, keyed by the bundle's commit:
#   ${SLUICE_CACHE_DIR:-$HOME/.cache/sluice}/llama.cpp-<commit>/bin/
# A second run finds them and returns at once. Progress goes to stderr; the binary directory is the only
# thing printed on stdout, so `bin=$(npm run -s build:llama-server)` works.
#
# Environment:
#   SLUICE_CACHE_DIR    where the cache lives (defaults to $HOME/.cache/sluice)
#   SLUICE_BUILD_JOBS   parallel compile jobs (defaults to 2)
#   SLUICE_LLAMA_TARGETS  which binaries, space-separated (defaults to "llama-server llama-batched-bench"; CI
#                         builds llama-server only, which the tests need)
set -euo pipefail

log() { printf 'build-llama-server: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bundle="$repo_root/node_modules/node-llama-cpp/llama/gitRelease.bundle"
[[ -f $bundle ]] || die "$bundle not found; run npm install first"
for tool in git cmake c++; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

# The bundle holds one squashed commit; its id names the cache so an upgraded node-llama-cpp builds anew.
commit=$(git bundle list-heads "$bundle" | awk '$2 == "HEAD" { print $1; exit }')
[[ -n $commit ]] || commit=$(git bundle list-heads "$bundle" | awk 'NR == 1 { print $1 }')
[[ $commit =~ ^[0-9a-f]{40}$ ]] || die "cannot read the commit of $bundle"
short=${commit:0:12}

cache_root=${SLUICE_CACHE_DIR:-$HOME/.cache/sluice}
dest="$cache_root/llama.cpp-$short"
read -r -a targets <<<"${SLUICE_LLAMA_TARGETS:-llama-server llama-batched-bench}"

cached() {
  local t
  for t in "${targets[@]}"; do [[ -x $dest/bin/$t ]] || return 1; done
}

if cached; then
  log "cached build of llama.cpp $short"
  printf '%s\n' "$dest/bin"
  exit 0
fi

mkdir -p "$cache_root"
# Two concurrent runs would both spend many minutes compiling; the second waits and then finds the cache.
if command -v flock >/dev/null; then
  exec 9>"$cache_root/.llama.cpp-$short.lock"
  flock 9
  if cached; then
    log "built meanwhile by another run"
    printf '%s\n' "$dest/bin"
    exit 0
  fi
fi

work=$(mktemp -d "$cache_root/.build-$short.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$SECONDS

log "cloning llama.cpp $short from $bundle"
git -c advice.detachedHead=false clone --quiet "$bundle" "$work/src" >&2

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
# Static libraries make bin/ self-contained (a shared build would point into the deleted build tree).
# The embedded web UI is switched off because provisioning it would try to download it.
log "configuring"
cmake -S "$work/src" -B "$work/build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF \
  -DGGML_NATIVE=ON \
  -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF >&2

jobs=${SLUICE_BUILD_JOBS:-2}
log "building ${targets[*]} with -j$jobs (llama-server alone: 8 minutes on 2 idle cores; with llama-batched-bench longer)"
cmake --build "$work/build" --config Release -j "$jobs" --target "${targets[@]}" >&2

mkdir -p "$work/out/bin"
# Binaries of an earlier build with other targets stay.
[[ -d $dest/bin ]] && cp -p "$dest/bin"/* "$work/out/bin/" 2>/dev/null || true
for t in "${targets[@]}"; do
  install -m 755 "$work/build/bin/$t" "$work/out/bin/$t"
done
{
  echo "commit: $commit"
  echo "bundle: $bundle"
  echo "flags: -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF"
  echo "compiler: $(c++ --version | head -n 1)"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
  "$work/out/bin/llama-server" --version 2>&1 | grep -E '^(version|built with)' || true
} >"$work/out/build-info.txt"

# Publish in one rename so a reader never sees a half-written cache entry.
rm -rf "$dest"
mv "$work/out" "$dest"
log "built in $((SECONDS - started)) s: $dest/bin"
printf '%s\n' "$dest/bin"
