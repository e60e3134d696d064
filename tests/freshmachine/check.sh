#!/usr/bin/env bash
# Release check: does ./dev set up everything on a machine where nothing was installed by hand?
#
# Builds a fresh Debian bookworm root file system with mmdebstrap (only what a new machine of
# this project's kind has before the project touches it: Debian's base, python3 with venv, git,
# CA certificates; Go is the machine's own /usr/local/go, bound in read-only), clones this
# repository's HEAD into it, and inside it (chroot, private mount namespace) runs
#   ./dev setup   Debian packages, the venv, the test kube-apiserver, kubectl/helm, then the
#                 host-tools self-check (every program in host-tools.tsv present)
#   ./dev demo    the README's first command
# It shares this machine's network (the package registries) and its CA bundle and pip settings.
# Everything it made is removed on exit, even on failure.
#
#   ./dev fresh-check [--no-kube] [--no-demo] [--keep DIR]
# Takes about 10 min (most of it the kube-apiserver build); --no-kube about 3 min.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
KUBE=1 DEMO=1 KEEP=
while [ $# -gt 0 ]; do
  case "$1" in
    --no-kube) KUBE=0 ;;
    --no-demo) DEMO=0 ;;
    --keep) KEEP=$2; shift ;;
    *) echo "fresh-check: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
say() { printf 'fresh-check: %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "fresh-check: needs root (mmdebstrap, chroot, namespaces)" >&2; exit 2; }
command -v mmdebstrap >/dev/null || {
  echo "fresh-check: mmdebstrap not installed (Debian package mmdebstrap; ./dev fresh-check installs it)" >&2
  exit 2
}

# The trap of shared/vm-lab.md: a lab address range on a host interface that contains the mirror's
# address sends package traffic into the lab. Refuse rather than fail half-way.
default_dev=$(ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") print $(i + 1); exit}')
for host in $(awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -E 's#^[a-z]+://([^/:]+).*#\1#' | sort -u); do
  for addr in $(getent ahostsv4 "$host" | awk '{print $1}' | sort -u); do
    via=$(ip -4 route get "$addr" | awk '{for (i = 1; i < NF; i++) if ($i == "dev") print $(i + 1); exit}')
    if [ -n "$default_dev" ] && [ "$via" != "$default_dev" ]; then
      echo "fresh-check: the package mirror $host ($addr) is routed through $via, not $default_dev:" \
        "a lab left an address range on this host (ip -4 addr show dev $via); remove it first" >&2
      exit 1
    fi
  done
done

WORK=${KEEP:-$(mktemp -d /tmp/hacluster-fresh.XXXXXX)}
ROOTFS=$WORK/rootfs
cleanup() {
  local rc=$?
  if [ -z "$KEEP" ]; then rm -rf --one-file-system "$WORK"; fi
  if [ $rc = 0 ]; then say "PASS"; else say "FAILED (exit $rc)"; fi
}
trap cleanup EXIT
mkdir -p "$ROOTFS"

t0=$SECONDS
say "building a fresh Debian bookworm root file system in $ROOTFS"
aptopts=(--aptopt='Acquire::Check-Valid-Until "false"' --aptopt='Acquire::Check-Date "false"')
sources=(/etc/apt/sources.list.d/*.sources)
mmdebstrap --quiet --variant=apt --include=ca-certificates,python3,python3-venv,git \
  "${aptopts[@]}" bookworm "$ROOTFS" "${sources[@]}" > "$WORK/mmdebstrap.log" 2>&1 ||
  { tail -20 "$WORK/mmdebstrap.log"; exit 1; }
say "root file system ready ($((SECONDS - t0)) s)"

# This machine's view of the outside: its CA bundle (the registries are reached through it), its
# pip and apt settings, its DNS. Nothing of the project's.
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
[ -e /etc/pip.conf ] && cp /etc/pip.conf "$ROOTFS/etc/pip.conf"
cp /etc/apt/apt.conf.d/99artifact-registry "$ROOTFS/etc/apt/apt.conf.d/" 2>/dev/null || true
mkdir -p "$ROOTFS/usr/local/go" "$ROOTFS/root"
git clone -q "$REPO" "$ROOTFS/root/hacluster"

inner="set -e; cd /root/hacluster; export HOME=/root PATH=/usr/local/go/bin:\$PATH"
# --no-kube: everything but the kube-apiserver build (Debian packages, venv, kubectl/helm, the
# host-tools self-check); the build itself is what takes most of the time.
[ $KUBE = 1 ] || inner="$inner HACLUSTER_SKIP_KUBE_BUILD=1"
inner="$inner; ./dev setup"
[ $DEMO = 1 ] && inner="$inner; ./dev demo"

t1=$SECONDS
say "inside it: ./dev setup$([ $DEMO = 1 ] && echo ' and ./dev demo')"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb LANG=C.UTF-8 \
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
  unshare --mount --propagation private --pid --fork -- bash -c '
    set -e
    r=$1; shift
    mount --bind "$r" "$r"  # / must be a mount point inside: ip netns runs mount --make-rslave /
    mount -t proc proc "$r/proc"
    mount --rbind /sys "$r/sys"
    mount --rbind /dev "$r/dev"
    mount -t tmpfs tmpfs "$r/run"
    mount -t tmpfs tmpfs "$r/tmp"
    if [ -d /usr/local/go ]; then mount --bind -o ro /usr/local/go "$r/usr/local/go"; fi
    exec chroot "$r" /bin/bash -c "$1"
  ' fresh "$ROOTFS" "$inner"
say "setup inside the fresh root took $((SECONDS - t1)) s (the whole check $((SECONDS - t0)) s)"
