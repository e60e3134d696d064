#!/usr/bin/env bash
# Regenerate the images' lock files from the versions the test suite runs:
#   requirements.lock  the runtime packages (pyproject.toml's dependencies), exact versions + hashes
#   images/build.lock  what builds the project's wheel (setuptools, wheel), exact versions + hashes
# The versions are those installed in .venv (./dev setup), so the images run what the tests ran;
# a dependency bump is: change pyproject.toml, ./dev setup, run the tests, run this, commit both.
# Needs PyPI (uv is fetched into a temporary venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
UV_VERSION=0.13.10
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/uv"
"$tmp/uv/bin/pip" install -q "uv==$UV_VERSION"
.venv/bin/pip freeze --exclude-editable > "$tmp/tested.txt"
compile() {
  "$tmp/uv/bin/uv" pip compile --quiet --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
    --generate-hashes --no-header --no-annotate "$@"
}
{
  echo "# The Python packages of the images (Dockerfile.operator, Dockerfile.agent): exact versions with"
  echo "# their hashes, the versions the test suite runs (.venv's). Regenerate with images/lock.sh."
  compile pyproject.toml --constraint "$tmp/tested.txt"
} > requirements.lock
printf 'setuptools>=77\nwheel\n' > "$tmp/build.in"
{
  echo "# What builds the project's wheel inside the images: exact versions with hashes (images/lock.sh)."
  compile "$tmp/build.in"
} > images/build.lock
echo "lock.sh: $(grep -c '==' requirements.lock) runtime and $(grep -c '==' images/build.lock) build packages locked"
