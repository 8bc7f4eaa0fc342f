"""The README as a newcomer uses it: its configuration passes check-config as copied,
its commands parse, its queries are valid PromQL, its links lead somewhere."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from exporter.cli import _build_parser, _normalise_argv
from tests.tools import require_program

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def indented_commands() -> list[str]:
    """Every command line of the README's code (indented blocks and fenced ones)."""
    found = []
    for line in README.splitlines():
        stripped = line.strip()
        if line.startswith("    ") and stripped.startswith(("gitlab-activity-exporter", "python3 ")):
            found.append(stripped)
    return found


def test_configuration_example_passes_check_config_as_copied(tmp_path: Path) -> None:
    (example,) = fenced(section("Configuration"), "yaml")
    path = tmp_path / "config.yml"
    path.write_text(example)
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", "--config.file", str(path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={**os.environ, "GITLAB_TOKEN": "glpat-readme-example"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config ok: 2 teams")
    # it shows every top-level key of the configuration
    assert set(yaml.safe_load(example)) == {"gitlab", "scan", "teams", "users", "score"}


def test_every_exporter_command_in_the_readme_parses() -> None:
    parser = _build_parser()
    commands = []
    for line in indented_commands():
        for part in re.split(r"\s*&&\s*", line):
            words = shlex.split(part.split(" #")[0].rstrip("&").strip())
            if len(words) > 1 and words[0] == "gitlab-activity-exporter":  # not the image
                commands.append(words[1:])
    assert len(commands) >= 6
    for argv in commands:
        args = parser.parse_args(_normalise_argv(argv))
        assert args.command, argv


def test_example_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = require_program("promtool")
    (block,) = fenced(section("Metrics"), "promql")
    queries = [q.strip() for q in re.split(r"\n\s*\n", block) if q.strip()]
    queries = [
        "\n".join(line for line in q.splitlines() if not line.startswith("#")) for q in queries
    ]
    assert len(queries) >= 5
    rules = {"groups": [{"name": "readme", "rules": [
        {"record": f"readme:query_{n}", "expr": q} for n, q in enumerate(queries)
    ]}]}
    path = tmp_path / "readme.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_links_lead_somewhere_and_nothing_unfollowable() -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), target
    anchors = set(re.findall(r"\]\(#([^)]+)\)", README))
    headings = {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#{2,3} (.+)$", README, flags=re.M)
    }
    assert anchors <= headings, anchors - headings
    for unfollowable in ("DESIGN", "§", "the issue"):
        assert unfollowable not in README, unfollowable
    assert (ROOT / "docs" / "leaderboard.png").read_bytes().startswith(b"\x89PNG")
