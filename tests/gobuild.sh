#!/usr/bin/env bash
# Build one of the test-only Go modules (tests/controlplane: kube-apiserver with etcd embedded;
# tests/kubeparts: kubelet, kube-controller-manager and kube-scheduler) once, and cache the binary
# outside the git tree, keyed by the module's inputs (go.mod, go.sum and its Go sources):
#
#   ${HACLUSTER_CACHE:-$HOME/.cache/hacluster}/<name>-<sha256(inputs)[:16]>
#
# Usage: gobuild.sh MODULE_DIR NAME. Prints that path on stdout (and nothing else). A second call
# is a no-op when the binary already exists. Progress and errors go to stderr.
#
# Exit codes: 0 ok, 1 build failed, 3 no Go toolchain found.
# Environment: HACLUSTER_CACHE (cache dir), GO (path to the go command),
# GOFLAGS (e.g. -p=1 to save memory), GOTOOLCHAIN, GOPROXY: passed to go.
set -euo pipefail

dir="$(cd "$1" && pwd)"
name="$2"
cache="${HACLUSTER_CACHE:-$HOME/.cache/hacluster}"
hash="$(cd "$dir" && cat go.mod go.sum $(ls *.go | LC_ALL=C sort) | sha256sum | cut -c1-16)"
out="$cache/$name-$hash"

if [[ -x "$out" ]]; then
    printf '%s\n' "$out"
    exit 0
fi

go="${GO:-}"
if [[ -z "$go" ]]; then
    go="$(command -v go || true)"
fi
if [[ -z "$go" && -x /usr/local/go/bin/go ]]; then
    go=/usr/local/go/bin/go
fi
if [[ -n "${GO:-}" && ! -x "$go" ]]; then
    echo "gobuild.sh: no Go toolchain: GO=$GO is not an executable" >&2
    exit 3
fi
if [[ -z "$go" ]]; then
    echo "gobuild.sh: no Go toolchain: go is not on PATH and /usr/local/go/bin/go is missing;" \
        "install Go or set GO=/path/to/go" >&2
    exit 3
fi

mkdir -p "$cache"
# Serialise concurrent builds (parallel CI jobs, pytest-xdist workers).
exec 9>"$cache/.$name-build.lock"
flock 9
if [[ -x "$out" ]]; then  # built by whoever held the lock
    printf '%s\n' "$out"
    exit 0
fi

# The Kubernetes release comes from go.mod's require line.
k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v1\./ { print $2; exit }' "$dir/go.mod")"
if [[ -z "$k8s_version" ]]; then
    echo "gobuild.sh: cannot find the k8s.io/kubernetes version in $dir/go.mod" >&2
    exit 1
fi
major="${k8s_version#v}"; major="${major%%.*}"
minor="${k8s_version#v*.}"; minor="${minor%%.*}"
# Reproducible: a fixed build date, not the clock.
build_date="1970-01-01T00:00:00Z"

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version"
    ldflags+=" -X $pkg.gitMajor=$major"
    ldflags+=" -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
    ldflags+=" -X $pkg.buildDate=$build_date"
done

tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
echo "gobuild.sh: building $name (Kubernetes $k8s_version) -> $out" >&2
echo "gobuild.sh: a cold build takes a long time (see README.md)" >&2
(
    cd "$dir"
    CGO_ENABLED=0 GOWORK=off "$go" build -mod=readonly -trimpath \
        -ldflags "$ldflags" -o "$tmp" .
)
chmod 0755 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
# Earlier builds of this module (other keys) are replaced: 120 MB each.
find "$cache" -maxdepth 1 -type f -name "$name-*" ! -name "$(basename "$out")" ! -name '*.tmp.*' -delete
printf '%s\n' "$out"
