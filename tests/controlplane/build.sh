#!/usr/bin/env bash
# Build the test kube-apiserver (upstream command + embedded etcd) once and
# cache it outside the git tree:
#
#   ${HACLUSTER_CACHE:-$HOME/.cache/hacluster}/kube-apiserver-<sha256(go.sum)[:16]>
#
# Prints that path on stdout (and nothing else). A second call is a no-op when
# the binary already exists. Progress and errors go to stderr.
#
# Exit codes: 0 ok, 1 build failed, 3 no Go toolchain found.
# Environment: HACLUSTER_CACHE (cache dir), GO (path to the go command),
# GOFLAGS (e.g. -p=1 to save memory), GOTOOLCHAIN, GOPROXY: passed to go.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${HACLUSTER_CACHE:-$HOME/.cache/hacluster}"
hash="$(sha256sum "$here/go.sum" | cut -c1-16)"
out="$cache/kube-apiserver-$hash"

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
    echo "build.sh: no Go toolchain: GO=$GO is not an executable" >&2
    exit 3
fi
if [[ -z "$go" ]]; then
    echo "build.sh: no Go toolchain: go is not on PATH and /usr/local/go/bin/go is missing;" \
        "install Go or set GO=/path/to/go" >&2
    exit 3
fi

mkdir -p "$cache"
# Serialise concurrent builds (parallel CI jobs, pytest-xdist workers).
exec 9>"$cache/.kube-apiserver-build.lock"
flock 9
if [[ -x "$out" ]]; then  # built by whoever held the lock
    printf '%s\n' "$out"
    exit 0
fi

# The Kubernetes release comes from go.mod's require line.
k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v1\./ { print $2; exit }' "$here/go.mod")"
if [[ -z "$k8s_version" ]]; then
    echo "build.sh: cannot find the k8s.io/kubernetes version in go.mod" >&2
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
echo "build.sh: building kube-apiserver $k8s_version (+ embedded etcd) -> $out" >&2
echo "build.sh: a cold build takes a long time (see README.md)" >&2
(
    cd "$here"
    CGO_ENABLED=0 GOWORK=off "$go" build -mod=readonly -trimpath \
        -ldflags "$ldflags" -o "$tmp" .
)
chmod 0755 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
printf '%s\n' "$out"
