"""The command line as a user meets it: real processes, exit codes, signals, one-line errors."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.simulator.model import Org
from exporter.simulator.server import FaultRule, SimulatorServer
from exporter.simulator.truth import expected_activity
from tests.conftest import TOKEN, config_document

EXPORTER = [sys.executable, "-m", "exporter"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(document))
    return path


async def run(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *EXPORTER, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


# --- configuration errors: exit 2, one line, no traceback -------------------------------


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"gitlab": {"url": "https://g.example", "token": "t"}, "teams": [{"name": "a", "members": ["x"]}], "typo": 1}, "typo: unknown key"),
        ({"gitlab": {"url": "https://g.example", "token": "t", "max_retries": "lots"}, "teams": [{"name": "a", "members": ["x"]}]}, "gitlab.max_retries"),
        ({"gitlab": {"url": "https://g.example", "token": "t"}, "scan": {"timezone": "Nowhere/Land"}, "teams": [{"name": "a", "members": ["x"]}]}, "scan.timezone: unknown time zone"),
        ({"gitlab": {"url": "https://g.example", "token": "t"}, "scan": {"periods": {"a": "10:00-09:00x"}}, "teams": [{"name": "a", "members": ["x"]}]}, "scan.periods"),
        ({"gitlab": {"url": "https://g.example"}, "teams": [{"name": "a", "members": ["x"]}]}, "gitlab.token: no token"),
        ({"gitlab": {"url": "https://g.example", "token": "t"}, "teams_file": "missing.json"}, "teams_file: cannot read"),
        ({"gitlab": {"url": "https://g.example", "token": "t"}, "scan": {"interval_seconds": float("inf")}, "teams": [{"name": "a", "members": ["x"]}]}, "scan.interval_seconds: Input should be a finite number"),
        ({"gitlab": {"url": "https://g.example", "token": "t", "requests_per_second": 1e-9}, "teams": [{"name": "a", "members": ["x"]}]}, "gitlab.requests_per_second: Input should be greater than or equal to 0.01"),
    ],
    ids=["unknown-key", "wrong-type", "bad-zone", "bad-window", "missing-token", "unreadable-file", "infinite-interval", "unworkable-pace"],
)
@pytest.mark.parametrize("command", ["check-config", "scan", "serve"])
async def test_bad_config_exits_2_with_one_line(tmp_path: Path, document: dict[str, Any], message: str, command: str) -> None:
    config = write_config(tmp_path, document)
    code, _, err = await run(command, "--config.file", str(config), env={"GITLAB_TOKEN": ""})
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert message in lines[0]
    assert "Traceback" not in err


async def test_unreadable_config_file(tmp_path: Path) -> None:
    code, _, err = await run("check-config", "--config.file", str(tmp_path / "nope.yml"))
    assert code == 2
    assert "cannot read" in err and "Traceback" not in err


async def test_check_config_ok(tmp_path: Path, org: Org) -> None:
    config = write_config(tmp_path, config_document(org, "https://gitlab.example.com"))
    code, out, _ = await run("check-config", "--config.file", str(config))
    assert code == 0
    assert out.startswith("config ok: 3 teams")


async def test_usage_errors_exit_2() -> None:
    code, _, err = await run("scan")
    assert code == 2 and "--config.file" in err
    code, _, err = await run("simulate", "--listen", "nowhere")
    assert code == 2 and "HOST:PORT" in err


# --- scan ----------------------------------------------------------------------------


async def test_scan_prometheus_output_has_the_true_numbers(tmp_path: Path, org: Org, sim: SimulatorServer) -> None:
    document = config_document(org, sim.url)
    config = write_config(tmp_path, document)
    code, out, err = await run("scan", "--config.file", str(config), "--output", "prometheus")
    assert code == 0, err
    users = [u["username"] for u in document["users"]]
    truth = expected_activity(
        org,
        usernames=users,
        timezone=document["scan"]["timezone"],
        periods=document["scan"]["periods"],
        lookback_days=document["scan"]["lookback_days"],
        now=org.now,
        extra_emails={u["username"]: u["emails"] for u in document["users"]},
    )
    commits = samples(out, "gitlab_activity_user_commits")
    periods = samples(out, "gitlab_activity_user_period_commits")
    projects = samples(out, "gitlab_activity_user_projects")
    assert len(commits) == len(users)
    for user, expected in truth.items():
        assert commits[(("user", user),)] == expected.commits, user
        for period, count in expected.period_commits.items():
            assert periods[(("period", period), ("user", user))] == count, (user, period)
        for kind, count in expected.projects.items():
            assert projects[(("kind", kind), ("user", user))] == count, (user, kind)
    assert TOKEN not in out + err
    if shutil.which("promtool") or os.environ.get("CI"):
        check = subprocess.run(["promtool", "check", "metrics"], input=out, capture_output=True, text=True, check=False)
        assert check.returncode == 0 and check.stdout + check.stderr == "", check.stdout + check.stderr


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
async def test_scan_other_formats(tmp_path: Path, org: Org, sim: SimulatorServer, fmt: str) -> None:
    document = config_document(org, sim.url)
    code, out, err = await run("scan", "--config.file", str(write_config(tmp_path, document)), "--output", fmt)
    assert code == 0, err
    for user in document["users"][:3]:
        assert user["username"] in out


async def test_scan_exits_1_when_no_user_could_be_scanned(tmp_path: Path, org: Org, sim: SimulatorServer) -> None:
    document = config_document(org, sim.url)
    document["gitlab"]["token"] = "glpat-revoked-token"
    code, out, err = await run("scan", "--config.file", str(write_config(tmp_path, document)), "--output", "json")
    assert code == 1
    # the scan stops at its first request, with one line naming the cause
    assert len([line for line in err.splitlines() if "rejected the token" in line]) == 1
    assert "reason=token_rejected" in err
    assert sim.log.count("/users") == 0
    assert "glpat-revoked-token" not in out + err


async def test_scan_exits_1_when_gitlab_is_unreachable(tmp_path: Path, org: Org) -> None:
    document = config_document(org, f"http://127.0.0.1:{free_port()}")
    document["gitlab"]["max_retries"] = 0
    code, _, err = await run("scan", "--config.file", str(write_config(tmp_path, document)))
    assert code == 1
    assert "Traceback" not in err


# --- serve and demo: readiness, metrics, signals ---------------------------------------


async def wait_for(url: str, *, status: int = 200, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == status:
                        return await response.text()
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer {status} within {timeout} s")
            await asyncio.sleep(0.1)


async def start(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    # every warning shown (ResourceWarning is hidden by default), so leaks reach stderr
    return await asyncio.create_subprocess_exec(
        *EXPORTER, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "always", **(env or {})},
    )


LEAK_SIGNS = ("Unclosed", "unclosed", "Task was destroyed", "ResourceWarning",
              "Exception ignored", "Traceback", "coroutine was never awaited")


def assert_clean_exit(code: int, seconds: float, err: str) -> None:
    assert code == 0, err
    assert seconds < 5, f"exit took {seconds:.1f} s"
    for sign in LEAK_SIGNS:
        assert sign not in err, err


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> tuple[int, float, str]:
    began = time.monotonic()
    proc.send_signal(sig)
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode is not None
    return proc.returncode, time.monotonic() - began, err.decode()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serve_metrics_ready_and_clean_exit(tmp_path: Path, org: Org, sim: SimulatorServer, sig: int) -> None:
    port = free_port()
    config = write_config(tmp_path, config_document(org, sim.url))
    proc = await start("serve", "--config.file", str(config), "--web.listen-address", f"127.0.0.1:{port}")
    try:
        await wait_for(f"http://127.0.0.1:{port}/-/healthy")
        await wait_for(f"http://127.0.0.1:{port}/-/ready")
        text = await wait_for(f"http://127.0.0.1:{port}/metrics")
        assert samples(text, "gitlab_activity_user_commits")
        assert samples(text, "gitlab_activity_api_requests_total")
        assert samples(text, "gitlab_activity_scan_interval_seconds") == {(): 300.0}
    finally:
        code, seconds, err = await stop(proc, sig)
    assert_clean_exit(code, seconds, err)  # idle: the first scan is done, the next is far


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serve_stops_in_the_middle_of_a_scan(tmp_path: Path, org: Org, sim: SimulatorServer, sig: int) -> None:
    sim.faults.latency_ms = 300  # a scan now takes far longer than this test waits
    port = free_port()
    config = write_config(tmp_path, config_document(org, sim.url))
    proc = await start("serve", "--config.file", str(config), "--web.listen-address", f"127.0.0.1:{port}")
    await wait_for(f"http://127.0.0.1:{port}/-/ready", status=503)
    await asyncio.sleep(0.5)
    assert len(sim.log) > 0  # requests are in flight
    code, seconds, err = await stop(proc, sig)
    assert_clean_exit(code, seconds, err)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serve_stops_in_the_middle_of_a_retry_sleep(tmp_path: Path, org: Org, sim: SimulatorServer, sig: int) -> None:
    # a 503 storm whose Retry-After is far longer than the shutdown may take
    sim.faults.retry_after_5xx = 60
    sim.faults.add(FaultRule(r".*", "503_html"))
    document = config_document(org, sim.url)
    document["gitlab"]["max_retries"] = 5
    port = free_port()
    proc = await start("serve", "--config.file", str(write_config(tmp_path, document)),
                       "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "debug")
    await wait_for(f"http://127.0.0.1:{port}/-/ready", status=503)
    began = time.monotonic()
    # the first answer (who is the token?) says GitLab is busy: the scan goes on, and its
    # first request then sleeps before its retry
    while sim.log.count(status=503) < 2 and time.monotonic() - began < 10:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # the scan is now asleep before its retry (60 s away)
    assert sim.log.count(status=503) == 2
    code, seconds, err = await stop(proc, sig)
    assert "gitlab_retry" in err  # it really was waiting to retry
    assert_clean_exit(code, seconds, err)


HANGING_SHUTDOWN = """
import asyncio, sys
from aiohttp import web
from exporter import cli
from exporter.logs import configure_logging

cli.SHUTDOWN_DEADLINE_SECONDS = float(sys.argv[2])
configure_logging("info", "console")

async def stuck(app):
    yield
    await asyncio.sleep(3600)  # a cleanup that never ends

app = web.Application()
app.cleanup_ctx.append(stuck)
asyncio.run(cli._serve_until_signal(app, "127.0.0.1", int(sys.argv[1]),
                                    on_started=lambda a: print(a, flush=True)))
"""


async def test_second_signal_exits_at_once_even_when_shutdown_hangs() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HANGING_SHUTDOWN, str(port), "60",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    await asyncio.wait_for(proc.stdout.readline(), 20)
    proc.send_signal(signal.SIGTERM)
    with pytest.raises(asyncio.TimeoutError):  # the first signal is stuck in the cleanup
        await asyncio.wait_for(asyncio.shield(proc.wait()), 0.7)
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 5)
    assert time.monotonic() - began < 0.5
    assert proc.returncode == 128 + signal.SIGINT
    err = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert "second signal" in err


async def test_a_hanging_shutdown_is_cut_off_by_the_deadline() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HANGING_SHUTDOWN, str(port), "1.0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    await asyncio.wait_for(proc.stdout.readline(), 20)
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 5)
    assert 0.9 < time.monotonic() - began < 2.5
    assert proc.returncode == 128 + signal.SIGTERM
    err = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert "shutdown took too long" in err


async def test_demo_serves_per_user_metrics_quickly() -> None:
    port = free_port()
    began = time.monotonic()
    proc = await start("demo", "--web.listen-address", f"127.0.0.1:{port}")
    try:
        while True:
            text = await wait_for(f"http://127.0.0.1:{port}/metrics", timeout=20)
            if samples(text, "gitlab_activity_user_commits"):
                break
            assert time.monotonic() - began < 20, "no per-user series within 20 s"
            await asyncio.sleep(0.2)
        # the demo's organisation is as awkward as a real one seen by a non-admin token
        skipped = samples(text, "gitlab_activity_projects_skipped")
        assert skipped[(("reason", "forbidden"),)] >= 1
        hidden = samples(text, "gitlab_activity_user_scan_failures_total")
        assert any(v and dict(k)["reason"] == "private_profile" for k, v in hidden.items())
        landing = await wait_for(f"http://127.0.0.1:{port}/")
        assert "metrics" in landing
    finally:
        code, seconds, err = await stop(proc)
    assert_clean_exit(code, seconds, err)
