"""The container images' Dockerfiles, checked without a Docker engine: every COPY source exists
(and is not excluded by the image's .dockerignore), the entrypoint is a console script of
pyproject.toml, every base image is pinned (exact patch version or digest), the operator runs as a
non-root user, and the agent says why it is root."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = {"operator": "hacluster-operator", "agent": "hacluster-agent"}
PINNED = re.compile(r"^[^\s@:]+(:[^\s@]*\d+\.\d+\.\d+[^\s@]*)?(@sha256:[a-f0-9]{64})?$")


@dataclass
class Dockerfile:
    path: Path
    froms: list[tuple[str, str | None]] = field(default_factory=list)  # (image, stage name)
    copies: list[tuple[list[str], str | None]] = field(default_factory=list)  # (sources, --from)
    users: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)  # ARG name -> default, before the first FROM
    text: str = ""


def parse(path: Path) -> Dockerfile:
    """The few instructions these Dockerfiles use; continuation lines joined, comments dropped."""
    text = path.read_text()
    df = Dockerfile(path, text=text)
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, f"{path.name}: a continuation line ends the file"
    for line in logical:
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "ARG" and not df.froms:
            name, _, default = rest.strip().partition("=")
            df.args[name] = default
        elif op == "FROM":
            words = rest.split()
            stage = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            df.froms.append((words[0], stage))
        elif op in ("COPY", "ADD"):
            words = rest.split()
            flags = [w for w in words if w.startswith("--")]
            args = [w for w in words if not w.startswith("--")]
            src_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            df.copies.append((args[:-1], src_stage))
        elif op == "USER":
            df.users.append(rest.strip())
        elif op == "ENTRYPOINT":
            df.entrypoint = json.loads(rest)
    return df


def dockerignore(path: Path) -> list[str]:
    """The image's own ignore file (BuildKit: <Dockerfile>.dockerignore), else the root one."""
    for candidate in (path.with_name(path.name + ".dockerignore"), REPO / ".dockerignore"):
        if candidate.exists():
            return [
                ln.strip()
                for ln in candidate.read_text().splitlines()
                if ln.strip() and not ln.startswith("#")
            ]
    return []


def ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    out = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(rel, pat) or rel.startswith(pat + "/"):
            out = not negate
    return out


def console_scripts() -> dict[str, str]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return dict(tomllib.load(f)["project"]["scripts"])


@pytest.fixture(params=sorted(IMAGES))
def image(request: pytest.FixtureRequest) -> tuple[str, Dockerfile]:
    name: str = request.param
    path = REPO / f"Dockerfile.{name}"
    assert path.exists(), f"{path} is missing"
    return name, parse(path)


def test_every_copy_source_exists_in_the_build_context(image: tuple[str, Dockerfile]) -> None:
    _, df = image
    stages = {stage for _, stage in df.froms if stage}
    patterns = dockerignore(df.path)
    local = [src for sources, stage in df.copies if stage is None for src in sources]
    assert local, "no COPY from the build context"
    for src in local:
        assert not src.startswith(("/", "..")), src
        assert not re.search(r"https?://", src), f"{src}: no remote sources"
        target = REPO / src
        assert target.exists(), f"{df.path.name}: COPY {src}: no such file in the build context"
        assert not ignored(src.rstrip("/"), patterns), f"{df.path.name}: {src} is excluded by .dockerignore"
    for _, stage in df.copies:
        assert stage is None or stage in stages, f"COPY --from={stage}: no such stage"


def test_the_project_sources_reach_the_build(image: tuple[str, Dockerfile]) -> None:
    _, df = image
    local = {src.rstrip("/") for sources, stage in df.copies if stage is None for src in sources}
    assert {"pyproject.toml", "api", "node-agent", "operator"} <= local
    assert "pip wheel" in df.text and "install --no-deps /wheels/" in df.text, (
        "the project wheel is installed"
    )
    assert "install --require-hashes --no-deps" in df.text and "-r requirements.lock" in df.text, (
        "the dependencies come from the lock file, by hash"
    )


def test_the_entrypoint_is_a_console_script(image: tuple[str, Dockerfile]) -> None:
    name, df = image
    scripts = console_scripts()
    assert df.entrypoint == [IMAGES[name]], df.entrypoint
    assert df.entrypoint[0] in scripts


def test_every_base_image_is_pinned(image: tuple[str, Dockerfile]) -> None:
    _, df = image
    stages = {stage for _, stage in df.froms if stage}
    assert df.froms
    for ref, _ in df.froms:
        if ref in stages:
            continue
        arg = re.fullmatch(r"\$\{?(\w+)\}?", ref)
        if arg:  # FROM ${BASE}: the ARG's default must be pinned (a build may override it)
            assert arg.group(1) in df.args, f"{ref}: no ARG {arg.group(1)} before the first FROM"
            ref = df.args[arg.group(1)]
        assert "$" not in ref, f"{ref}: a base image from a build argument is not pinned"
        assert ":latest" not in ref
        assert PINNED.match(ref) and (":" in ref or "@sha256:" in ref), (
            f"{ref}: pin the base image to an exact version (x.y.z) or a digest"
        )


def test_the_operator_runs_as_non_root() -> None:
    df = parse(REPO / "Dockerfile.operator")
    assert df.users, "the operator image sets no USER"
    user = df.users[-1].split(":")[0]
    assert user not in ("", "0", "root"), df.users[-1]


def test_the_agent_is_root_and_says_why() -> None:
    df = parse(REPO / "Dockerfile.agent")
    assert df.users and df.users[-1].split(":")[0] in ("0", "root")
    assert "NET_ADMIN" in df.text and "NET_RAW" in df.text


def test_image_versions_match_the_project_and_the_chart() -> None:
    with (REPO / "pyproject.toml").open("rb") as f:
        version = tomllib.load(f)["project"]["version"]
    chart = (REPO / "charts" / "hacluster" / "Chart.yaml").read_text()
    assert re.search(rf'^appVersion: "{re.escape(version)}"$', chart, re.M), "Chart.yaml appVersion"
    for name in IMAGES:
        text = (REPO / f"Dockerfile.{name}").read_text()
        assert f'org.opencontainers.image.version="{version}"' in text


def test_the_lock_pins_every_dependency_by_hash() -> None:
    """requirements.lock (images/lock.sh): every dependency of pyproject.toml, one exact version
    each, every package with at least one hash (pip --require-hashes refuses anything else)."""
    with (REPO / "pyproject.toml").open("rb") as f:
        wanted = {
            re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-")
            for d in tomllib.load(f)["project"]["dependencies"]
        }
    pinned: dict[str, int] = {}
    current = None
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash=sha256:"):
            assert current is not None
            pinned[current] += 1
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s\\]+)\s*\\?", line)
        assert m, f"requirements.lock: not an exact pin: {line}"
        current = m.group(1).lower().replace("_", "-")
        pinned[current] = 0
    assert wanted <= set(pinned), f"not locked: {sorted(wanted - set(pinned))}"
    assert all(n > 0 for n in pinned.values()), [p for p, n in pinned.items() if n == 0]
