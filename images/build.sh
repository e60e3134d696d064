#!/usr/bin/env bash
# Build the operator and agent images with buildah, from Dockerfile.operator and Dockerfile.agent.
#
#   images/build.sh [--registry REG] [--tag TAG] [--base IMAGE] [--archive DIR] [--push]
#
#   --registry REG  image names REG/hacluster-operator:TAG and REG/hacluster-agent:TAG
#                   (default: localhost/hacluster)
#   --tag TAG       default: the version in pyproject.toml
#   --base IMAGE    the Dockerfiles' BASE (a Debian bookworm image with python3 and its venv module).
#                   Default: one built here from Debian packages with mmdebstrap (no registry
#                   needed), localhost/hacluster-base:bookworm-<key>, <key> a hash of its recipe;
#                   built once, reused while the recipe is the same
#   --archive DIR   also write DIR/hacluster-operator.tar and DIR/hacluster-agent.tar
#                   (docker-archive, for `ctr images import` or `podman load`)
#   --push          push both to REG (buildah push; log in first with `buildah login REG`)
#   --ca-file FILE  a CA bundle the build's downloads trust (a TLS-inspecting proxy's, e.g. the
#                   host's /etc/ssl/certs/ca-certificates.crt): mounted over the build container's
#                   bundle while its RUN steps run, never put in the images
#
# Prints, per image, its ID and the digest of its installed Python package set (every file under
# /opt/hacluster): two builds from the same commit and lock file give the same digest.
# Needs root (or a rootless buildah set-up), buildah, mmdebstrap (for the default base), and the
# package registries: Debian's mirror (the base) and PyPI (requirements.lock).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

registry=localhost/hacluster
tag="$(awk -F'"' '/^version = / { print $2; exit }' pyproject.toml)"
base=""
archive=""
push=0
ca_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --registry) registry="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    --archive) archive="$2"; shift 2 ;;
    --push) push=1; shift ;;
    --ca-file) ca_file="$2"; shift 2 ;;
    *) sed -n '2,24p' "$0" >&2; exit 2 ;;
  esac
done
for tool in buildah sha256sum; do
  command -v "$tool" >/dev/null || { echo "images/build.sh: $tool is not installed (Debian: apt-get install $tool)" >&2; exit 1; }
done

# The base: Debian bookworm's own Python 3.11, the venv module, libnftables (the agent's kernel
# fence) and CA certificates; nothing else. Apt's lists and caches are removed (size, and two
# builds of the base give the same files but for dpkg's logs).
BASE_PACKAGES="python3,python3-venv,libnftables1,ca-certificates"
base_image() {
  local sources key name tmp
  sources="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null || true)"
  key="$(printf '%s\n%s\n%s\n' "$BASE_PACKAGES" "$sources" "$(declare -f base_image)" | sha256sum | cut -c1-12)"
  name="localhost/hacluster-base:bookworm-$key"
  if buildah inspect --type image "$name" >/dev/null 2>&1; then
    echo "$name"; return
  fi
  command -v mmdebstrap >/dev/null || { echo "images/build.sh: mmdebstrap is not installed (Debian: apt-get install mmdebstrap), or pass --base" >&2; exit 1; }
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" RETURN
  echo "images/build.sh: building the base $name from Debian packages (mmdebstrap)" >&2
  # No recommended packages (perl came in with them) and no documentation, manual pages or
  # translations (but every package's copyright file): 100 MB less to pull onto each node.
  mmdebstrap --variant=minbase --include="$BASE_PACKAGES" \
    --aptopt='Acquire::Check-Valid-Until "false"' --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log "$1"/var/log/apt/*' \
    bookworm "$tmp/rootfs.tar" >&2
  local ctr
  ctr="$(buildah from scratch)"
  buildah add --quiet "$ctr" "$tmp/rootfs.tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash \
    --label org.opencontainers.image.description="Debian bookworm with python3 (hacluster's image base)" \
    "$ctr"
  buildah commit --quiet --rm --timestamp 0 "$ctr" "$name" >/dev/null
  echo "$name"
}

if [ -z "$base" ]; then
  base="$(base_image)"
fi

installed_digest() {  # the digest of every file under /opt/hacluster in image $1
  local ctr mnt digest
  ctr="$(buildah from --quiet --pull-never "$1")"
  mnt="$(buildah mount "$ctr")"
  digest="$(cd "$mnt/opt/hacluster" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
  buildah umount "$ctr" >/dev/null
  buildah rm "$ctr" >/dev/null
  echo "sha256:$digest"
}

for component in operator agent; do
  image="$registry/hacluster-$component:$tag"
  echo "images/build.sh: building $image on $base" >&2
  volumes=()
  if [ -n "$ca_file" ]; then
    volumes=(--volume "$(readlink -f "$ca_file"):/etc/ssl/certs/ca-certificates.crt:ro")
  fi
  buildah bud --quiet --layers=false --pull-never --network host --timestamp 0 \
    --build-arg BASE="$base" "${volumes[@]}" \
    --file "Dockerfile.$component" --ignorefile "Dockerfile.$component.dockerignore" \
    --tag "$image" . >&2
  echo "$image id $(buildah inspect --type image --format '{{.FromImageID}}' "$image") installed $(installed_digest "$image")"
  if [ -n "$archive" ]; then
    mkdir -p "$archive"
    rm -f "$archive/hacluster-$component.tar"
    buildah push --quiet "$image" "docker-archive:$archive/hacluster-$component.tar:$image" >&2
  fi
  if [ "$push" = 1 ]; then
    buildah push "$image" "docker://$image" >&2
  fi
done
