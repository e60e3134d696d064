"""The project's container images, built here for the virtual-machine cluster (issue 13).

:func:`ensure_images` runs ``images/build.sh`` (buildah, the Dockerfiles as users build them, on a
base made from Debian packages) and keeps the two images as docker archives under
``~/.cache/hacluster/images-<key>``, ``<key>`` a hash of every input of the images (the
Dockerfiles and their ignore files, the lock files, pyproject.toml, the build script and every
tracked file of the three Python packages): the next run with the same sources loads the archives
without building. :func:`ensure_pause_image` makes the pod sandbox image the kubelet needs from
the Kubernetes sources' own ``pause.c`` (no registry is reachable here).

Run as ``python -m tests.support.images`` to build (or find) them and print what was built.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.kubetools import cache_dir

REPO = Path(__file__).resolve().parents[2]
REGISTRY = "localhost/hacluster"
PAUSE_IMAGE = "localhost/hacluster/pause:3.10"
INPUTS = (
    "Dockerfile.operator",
    "Dockerfile.operator.dockerignore",
    "Dockerfile.agent",
    "Dockerfile.agent.dockerignore",
    "requirements.lock",
    "images/build.lock",
    "images/build.sh",
    "pyproject.toml",
)
PACKAGE_DIRS = ("api", "node-agent", "operator")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
KUBERNETES_MODULE = "k8s.io/kubernetes@v1.37.2"  # tests/kubeparts/go.mod: where pause.c comes from


class ImageBuildError(RuntimeError):
    """An image could not be built; the message carries the build's last output lines."""


@dataclass(frozen=True)
class Images:
    dir: Path
    operator: str  # image references, as the chart's values name them
    agent: str
    tag: str
    archives: tuple[Path, ...]  # docker archives, for `ctr images import`
    installed: dict[str, str]  # image -> digest of its installed Python package set


def _tracked(dirs: tuple[str, ...]) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--", *dirs], capture_output=True, check=True
    ).stdout
    return sorted(p for p in out.decode().split("\0") if p and not p.endswith((".pyc", ".md")))


def images_key() -> str:
    """A hash of every file the two images are built from."""
    h = hashlib.sha256()
    for rel in (*INPUTS, *_tracked(PACKAGE_DIRS)):
        h.update(rel.encode() + b"\0")
        path = REPO / rel
        h.update(path.read_bytes() if path.exists() else b"<missing>")
    return h.hexdigest()[:16]


def _tag() -> str:
    for line in (REPO / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise ImageBuildError("pyproject.toml has no version line")


def ensure_images(cache: Path | None = None) -> Images:
    """The operator and agent images as docker archives, built first when their sources changed."""
    key = images_key()
    root = cache or cache_dir()
    final = root / f"images-{key}"
    tag = _tag()
    if not (final / "images.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        with (root / ".images.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (final / "images.json").exists():
                _build(final, tag)
    meta = json.loads((final / "images.json").read_text())
    return Images(
        final,
        f"{REGISTRY}/hacluster-operator:{tag}",
        f"{REGISTRY}/hacluster-agent:{tag}",
        tag,
        (final / "hacluster-operator.tar", final / "hacluster-agent.tar"),
        dict(meta["installed"]),
    )


def _build(final: Path, tag: str) -> None:
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        argv = ["bash", str(REPO / "images" / "build.sh"), "--registry", REGISTRY, "--tag", tag]
        argv += ["--archive", str(work)]
        if HOST_CA.exists():  # this machine's trusted CAs (a TLS-inspecting proxy's among them)
            argv += ["--ca-file", str(HOST_CA)]
        proc = subprocess.run(
            argv,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        (work / "build.log").write_text(proc.stderr)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-40:])
            raise ImageBuildError(f"images/build.sh failed (exit {proc.returncode}):\n{tail}")
        installed = {}
        for line in proc.stdout.splitlines():  # "<image> id <id> installed sha256:<digest>"
            words = line.split()
            if len(words) == 5 and words[1] == "id" and words[3] == "installed":
                installed[words[0]] = words[4]
        if len(installed) != 2:
            raise ImageBuildError(f"images/build.sh did not report both images:\n{proc.stdout}")
        (work / "images.json").write_text(json.dumps({"tag": tag, "installed": installed}, indent=1))
        work.chmod(0o755)
        work.rename(final)
        for old in final.parent.glob("images-*"):  # earlier sources' images: replaced, 0.7 GB each
            if old != final and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        for stale in final.parent.glob(".images-*"):  # builds killed half-way (we hold the lock)
            if stale != work:
                shutil.rmtree(stale, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _go() -> str:
    """The go command, found as tests/gobuild.sh finds it."""
    found = os.environ.get("GO") or shutil.which("go") or "/usr/local/go/bin/go"
    if not os.access(found, os.X_OK):
        raise ImageBuildError("no Go toolchain: go is not on PATH and /usr/local/go/bin/go is missing")
    return found


def _go_module_dir(module: str) -> Path:
    gomodcache = subprocess.run(
        [_go(), "env", "GOMODCACHE"], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = Path(gomodcache) / module
    if not path.is_dir():
        raise ImageBuildError(f"{path} is missing: build tests/kubeparts first (it downloads {module})")
    return path


def ensure_pause_image(cache: Path | None = None) -> Path:
    """The pod sandbox ("pause") image as a docker archive: Kubernetes' own pause.c, linked
    statically, alone in an image (what registry.k8s.io/pause is)."""
    source = _go_module_dir(KUBERNETES_MODULE) / "build" / "pause" / "linux" / "pause.c"
    key = hashlib.sha256(source.read_bytes() + PAUSE_IMAGE.encode()).hexdigest()[:16]
    out = (cache or cache_dir()) / f"pause-{key}.tar"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pause-") as tmp:
        binary = Path(tmp) / "pause"
        version = PAUSE_IMAGE.rsplit(":", 1)[1]
        _check(["gcc", "-Os", "-static", f'-DVERSION="{version}"', "-o", str(binary), str(source)])
        _check(["strip", str(binary)])
        ctr = _check(["buildah", "from", "scratch"]).strip()
        try:
            _check(["buildah", "copy", ctr, str(binary), "/pause"])
            _check(["buildah", "config", "--entrypoint", '["/pause"]', "--user", "65535:65535", ctr])
            _check(["buildah", "commit", "--quiet", "--timestamp", "0", ctr, PAUSE_IMAGE])
        finally:
            subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False)
        partial = out.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        _check(["buildah", "push", "--quiet", PAUSE_IMAGE, f"docker-archive:{partial}:{PAUSE_IMAGE}"])
        partial.rename(out)
    return out


def _check(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise ImageBuildError(
            f"{' '.join(argv)} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    return proc.stdout


def main() -> int:
    images = ensure_images()
    pause = ensure_pause_image()
    print(f"images in {images.dir}:")
    for name in (images.operator, images.agent):
        print(f"  {name}  installed Python packages {images.installed[name]}")
    print(f"  {PAUSE_IMAGE}  {pause}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
