"""The front door: each scan's first request names what is wrong with the connection.

Every case is a real server (or a real absence of one): nothing listening, a name that
does not resolve, a certificate from a CA the system does not trust, https spoken to an
http port and the reverse, a wrong token, a URL with an extra path. The scan stops at
its first request with one line and a reason label, and ``check-config --connect``
says the same and exits 1.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter.config import ConfigError, parse_config
from exporter.service import ExporterService
from exporter.simulator.model import Org
from exporter.simulator.server import GitLabSimulator, SimulatorServer
from tests.conftest import HOST, TOKEN, config_document
from tests.test_webconfig import Pki, pki  # noqa: F401  (the fixture)
from tests.tools import free_port


@pytest.fixture
async def tls_sim(org: Org, pki: Pki) -> AsyncIterator[tuple[str, GitLabSimulator]]:  # noqa: F811
    """The simulator behind TLS, its certificate signed by the test CA."""
    simulator = GitLabSimulator(org, token=TOKEN)
    runner = web.AppRunner(simulator.app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert, pki.key)
    port = free_port()
    await web.TCPSite(runner, HOST, port, ssl_context=context).start()
    try:
        yield f"{HOST}:{port}", simulator
    finally:
        await runner.cleanup()


def _doc(org: Org, url: str, **gitlab: Any) -> dict[str, Any]:
    doc = config_document(org, url)
    doc["gitlab"].update(gitlab)
    return doc


async def _scan_door(doc: dict[str, Any]) -> tuple[ExporterService, CollectorRegistry]:
    config = parse_config(doc, env={})
    registry = CollectorRegistry()
    service = ExporterService(config)
    service.attach_metrics(registry)
    async with service:
        await service.scan_once()
    return service, registry


def _door_cases(
    org: Org, sim: SimulatorServer, tls: str, pki_: Pki
) -> dict[str, tuple[dict[str, Any], str, str]]:
    """name -> (config document, reason, words the one line must hold)."""
    closed = free_port()
    return {
        "refused": (_doc(org, f"http://{HOST}:{closed}"), "connection_refused", "refused"),
        "unresolved": (
            _doc(org, "http://gitlab.nonexistent.invalid"), "name_not_resolved", "does not resolve"
        ),
        "untrusted": (_doc(org, f"https://{tls}"), "tls_untrusted", "gitlab.ca_file"),
        "https_to_http": (
            _doc(org, "https://" + sim.url.removeprefix("http://")), "tls_mismatch", "use http://"
        ),
        "http_to_tls": (_doc(org, f"http://{tls}"), "tls_mismatch", "use https://"),
        "token": (_doc(org, sim.url, token="glpat-wrong"), "token_rejected", "rejected the token"),
        "extra_path": (
            _doc(org, sim.url + "/gitlab"), "not_gitlab_api", "without the path '/gitlab'"
        ),
    }


async def test_each_door_mistake_stops_the_scan_at_its_first_request(
    org: Org, sim: SimulatorServer, tls_sim: tuple[str, GitLabSimulator], pki: Pki  # noqa: F811
) -> None:
    tls, tls_simulator = tls_sim
    for name, (doc, reason, words) in _door_cases(org, sim, tls, pki).items():
        sim.log.clear()
        tls_simulator.log.clear()
        service, registry = await _scan_door(doc)
        problem = service.connection_problem
        assert problem is not None, name
        assert problem.reason == reason, (name, str(problem))
        assert words in str(problem), (name, str(problem))
        assert "\n" not in str(problem)
        assert TOKEN not in str(problem) and "glpat-wrong" not in str(problem)
        # one request, no retries, no user scanned
        assert len(sim.log) + len(tls_simulator.log) <= 1, (name, sim.log.by_endpoint())
        assert service.snapshot.last_scan is None
        assert registry.get_sample_value("gitlab_activity_connection_up") == 0
        assert registry.get_sample_value(
            "gitlab_activity_connection_failures_total", {"reason": reason}
        ) == 1, name


async def test_ca_file_trusts_an_internal_ca(
    org: Org, tls_sim: tuple[str, GitLabSimulator], pki: Pki  # noqa: F811
) -> None:
    tls, _simulator = tls_sim
    service, registry = await _scan_door(_doc(org, f"https://{tls}", ca_file=str(pki.ca)))
    assert service.connection_problem is None
    assert service.server is not None and service.server.username
    summary = service.snapshot.last_scan
    assert summary is not None and summary.users_total > 0
    assert summary.users_failed == 0
    assert registry.get_sample_value("gitlab_activity_connection_up") == 1


def test_ca_file_must_hold_a_certificate(org: Org, tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    for path, words in ((bad, "holds no PEM certificate"), (tmp_path / "none.pem", "cannot read")):
        with pytest.raises(ConfigError, match=f"gitlab.ca_file: .*{words}"):
            parse_config(_doc(org, "https://gitlab.example.com", ca_file=str(path)), env={})


async def _run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_scan_and_check_config_connect_name_the_cause_in_one_line(
    org: Org,
    sim: SimulatorServer,
    tls_sim: tuple[str, GitLabSimulator],
    pki: Pki,  # noqa: F811
    tmp_path: Path,
) -> None:
    tls, _simulator = tls_sim
    runs = []
    for name, (doc, reason, words) in _door_cases(org, sim, tls, pki).items():
        path = tmp_path / f"{name}.yml"
        path.write_text(yaml.safe_dump(doc))
        for command in (["scan"], ["check-config", "--connect"]):
            run = _run_cli(*command, "--config.file", str(path))
            runs.append((name, command, reason, words, run))
    results = await asyncio.gather(*(run for *_, run in runs))
    for (name, command, reason, words, _), (code, out, err) in zip(runs, results, strict=True):
        assert code == 1, (name, command, out, err)
        lines = [line for line in err.splitlines() if words in line]
        assert len(lines) == 1, (name, command, err)
        if command == ["scan"]:
            assert f"reason={reason}" in lines[0], (name, err)
            assert "no user could be scanned" not in err
            assert "timeout" not in err or reason == "timeout"
        else:
            assert lines[0].startswith("gitlab-activity-exporter: error: connection:"), err


async def test_check_config_connect_says_who_the_token_is(
    org: Org, aiohttp_raw_server: Any, tmp_path: Path
) -> None:
    async def non_admin(request: web.BaseRequest) -> web.Response:
        if request.headers.get("PRIVATE-TOKEN") != TOKEN:
            return web.json_response({"message": "401 Unauthorized"}, status=401)
        if request.path == "/api/v4/user":
            return web.json_response({"id": 7, "username": "bob", "name": "Bob", "state": "active"})
        if request.path == "/api/v4/version":
            return web.json_response({"version": "18.1.2-ee", "revision": "abc"})
        return web.json_response({"error": "404 Not Found"}, status=404)

    server = await aiohttp_raw_server(non_admin)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(_doc(org, str(server.make_url("")).rstrip("/"))))
    code, out, err = await _run_cli("check-config", "--connect", "--config.file", str(path))
    assert code == 0, err
    assert "GitLab 18.1.2-ee" in out
    assert "token of bob (Bob), not an administrator" in out
    assert "private profiles" in out and "Guest" in out
