"""The Dockerfile cannot rot unnoticed: its wheel build and venv install steps are
replayed here in a fresh directory (no Docker engine needed), and the installed
entrypoint then serves metrics without writing a byte to its install tree."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.tools import free_port, http_get

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
# Directories of the image the replay maps into its own root; every other absolute
# path in a replayed step is an error (the replay must never touch the host).
IMAGE_DIRS = ("/src", "/wheels", "/opt")


@dataclass
class Stage:
    base: str
    name: str | None
    steps: list[tuple[str, str]] = field(default_factory=list)


def instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def stages() -> list[Stage]:
    found: list[Stage] = []
    args: dict[str, str] = {}
    for keyword, rest in instructions(DOCKERFILE.read_text()):
        if keyword == "ARG" and not found:  # an ARG before FROM: usable in FROM lines
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base.strip())
            found.append(Stage(base, name.strip() or None))
        else:
            found[-1].steps.append((keyword, rest))
    return found


def env_pairs(rest: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(rest))


def final(keyword: str) -> str:
    return [rest for k, rest in stages()[-1].steps if k == keyword][-1]


def test_image_shape() -> None:
    build, runtime = stages()
    assert build.base == runtime.base
    # pinned by digest, and the comment says how to move the pin
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", build.base), build.base
    text = DOCKERFILE.read_text()
    assert re.search(r"^#\s+docker buildx imagetools inspect python:3\.11-slim", text, re.M)
    assert build.name == "build"
    runtime_env = {k: v for key, rest in runtime.steps if key == "ENV" for k, v in env_pairs(rest).items()}
    assert runtime_env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert final("EXPOSE") == "9842"
    user = final("USER").split(":")[0]
    assert user not in ("root", "0") and (not user.isdigit() or int(user) > 0)
    assert json.loads(final("ENTRYPOINT")) == ["gitlab-activity-exporter"]
    assert json.loads(final("CMD")) == ["serve", "--config.file", "/etc/gitlab-activity-exporter/config.yml"]
    runs = " ".join(rest for key, rest in runtime.steps if key == "RUN")
    assert "python -m venv" in runs and "--no-index" in runs


def test_no_layer_of_the_image_holds_the_wheels() -> None:
    # a COPY of the wheels makes a layer that a later `rm` cannot shrink: the install
    # step mounts them from the build stage instead
    runtime = stages()[-1]
    copies = [rest for key, rest in runtime.steps if key == "COPY"]
    assert not [c for c in copies if "wheels" in c], copies
    (install,) = [rest for key, rest in runtime.steps if key == "RUN" and "--find-links /wheels" in rest]
    assert install.startswith("--mount=type=bind,from=build,source=/wheels,target=/wheels ")
    assert "rm " not in install


def test_healthcheck_asks_the_liveness_endpoint_on_the_exposed_port() -> None:
    check = final("HEALTHCHECK")
    command = json.loads(check.split(" CMD ", 1)[1])
    assert command[0] == "python"  # the slim image has no curl
    assert f"http://127.0.0.1:{final('EXPOSE')}/-/healthy" in command[-1]


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore, "the build context should be an allow-list"
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    build = stages()[0]
    for key, rest in build.steps:
        if key == "COPY" and not rest.startswith("--from"):
            for source in shlex.split(rest)[:-1]:
                assert source.rstrip("/") in kept, f"{source} is excluded from the build context"


class Replay:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env: dict[str, str] = {}
        self.workdir = "/"

    def host(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def rewrite(self, text: str) -> str:
        pattern = r"(?<![\w.])(" + "|".join(map(re.escape, IMAGE_DIRS)) + r")(?=/|\s|$|:)"
        rewritten = re.sub(pattern, lambda m: str(self.root) + m.group(1), text)
        stray = [t for t in shlex.split(rewritten) if t.startswith("/") and not t.startswith(str(self.root))]
        assert not stray, f"replayed step names paths outside the image dirs: {stray}"
        return rewritten

    def run(self, stage: Stage) -> None:
        self.workdir = "/"
        for keyword, rest in stage.steps:
            if keyword == "ENV":
                for key, value in env_pairs(rest).items():
                    value = value.replace("$PATH", os.environ["PATH"])
                    if key == "PATH":
                        value = ":".join(self.rewrite(p) if p.startswith(IMAGE_DIRS) else p for p in value.split(":"))
                    self.env[key] = value
            elif keyword == "WORKDIR":
                self.workdir = rest
                self.host(rest).mkdir(parents=True, exist_ok=True)
            elif keyword == "COPY":
                args = shlex.split(rest)
                from_stage = args[0].startswith("--from=")
                *sources, dest = args[1:] if from_stage else args
                target = self.host(dest if dest.startswith("/") else f"{self.workdir}/{dest}")
                for source in sources:
                    origin = self.host(source) if from_stage else ROOT / source
                    into = target / origin.name if dest.endswith("/") or len(sources) > 1 else target
                    if origin == into:
                        continue
                    if origin.is_dir():
                        shutil.copytree(origin, into, ignore=shutil.ignore_patterns("__pycache__"))
                    else:
                        into.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(origin, into)
            elif keyword == "RUN":
                # a bind mount from the build stage: the replay's root already has it
                rest = re.sub(r"^(--mount=\S+\s+)+", "", rest)
                # only the steps that build or install Python packages; not useradd
                for part in rest.split("&&"):
                    part = part.strip()
                    if not re.search(r"\bpip\b|\bvenv\b|/wheels", part):
                        continue
                    command = re.sub(r"^python\b", shlex.quote(sys.executable), self.rewrite(part))
                    env = {**os.environ, **self.env}
                    env.pop("PYTHONPATH", None)
                    env.pop("VIRTUAL_ENV", None)
                    done = subprocess.run(
                        ["bash", "-euo", "pipefail", "-c", command],
                        cwd=self.host(self.workdir), env=env, capture_output=True, text=True, check=False,
                    )  # fmt: skip
                    assert done.returncode == 0, f"{part}\n{done.stdout}\n{done.stderr}"


def healthcheck(python: Path, port: int) -> int:
    """The image's HEALTHCHECK command run with the image's Python, against ``port``."""
    command = json.loads(final("HEALTHCHECK").split(" CMD ", 1)[1])
    argv = [str(python), *(a.replace(f":{final('EXPOSE')}/", f":{port}/") for a in command[1:])]
    return subprocess.run(argv, capture_output=True, check=False, env={"PATH": "/usr/bin:/bin"}).returncode


def tree(path: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in path.rglob("*")}


@pytest.mark.e2e
def test_replayed_install_runs_the_entrypoint(tmp_path: Path) -> None:
    replay = Replay(tmp_path / "image")
    for stage in stages():
        replay.run(stage)
    entrypoint = json.loads(final("ENTRYPOINT"))[0]
    path = shutil.which(entrypoint, path=replay.env["PATH"])
    assert path is not None and path.startswith(str(replay.root)), path
    python = Path(path).parent / "python"
    where = subprocess.run([python, "-c", "import exporter; print(exporter.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert where.stdout.startswith(str(replay.root)), "the package must come from the installed wheel"

    before = tree(tmp_path)  # the install tree and the working directory
    port = free_port()
    env = {"PATH": replay.env["PATH"], "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(tmp_path / "nohome")}
    proc = subprocess.Popen(
        [path, "demo", "--web.listen-address", f"127.0.0.1:{port}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        commits: list[float] = []
        while not commits and time.monotonic() < deadline:
            code, body = http_get(f"http://127.0.0.1:{port}/metrics")
            if code == 200:
                commits = [
                    s.value for f in text_string_to_metric_families(body) for s in f.samples
                    if s.name == "gitlab_activity_user_commits"
                ]  # fmt: skip
            time.sleep(0.2)
        assert commits, "the installed entrypoint served no per-user metrics within 30 s"
        assert healthcheck(python, port) == 0
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, output
    assert healthcheck(python, port) != 0  # nothing listens: unhealthy
    assert tree(tmp_path) == before, "the exporter wrote files at runtime"
    assert not (tmp_path / "nohome").exists()
