"""--web.config.file: TLS (real handshakes, certificates made here) and basic auth."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import CollectorRegistry

from exporter.snapshot import Snapshot
from exporter.web import make_app
from exporter.webconfig import BasicAuth, WebConfig, WebConfigError, load_web_config
from tests.test_cli import free_port, start, stop

PASSWORD = "correct horse battery staple"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


# --- certificates ----------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing the server trusts
    rogue_cert: Path  # a client certificate from other_ca
    rogue_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False, server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate | None = None,
           key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, other_key = _key(), _key()
    ca = _cert("test CA", ca_key, "test CA", ca_key, ca=True)
    other = _cert("other CA", other_key, "other CA", other_key, ca=True)
    server_key, client_key, rogue_key = _key(), _key(), _key()
    server = _cert("localhost", server_key, "test CA", ca_key, server=True)
    client = _cert("prometheus", client_key, "test CA", ca_key)
    rogue = _cert("prometheus", rogue_key, "other CA", other_key)
    return Pki(
        ca=_write(d / "ca.crt", ca),
        cert=_write(d / "server.crt", server),
        key=_write(d / "server.key", key=server_key),
        client_cert=_write(d / "client.crt", client),
        client_key=_write(d / "client.key", key=client_key),
        other_ca=_write(d / "other-ca.crt", other),
        rogue_cert=_write(d / "rogue.crt", rogue),
        rogue_key=_write(d / "rogue.key", key=rogue_key),
    )


def client_context(pki: Pki, *, trust: Path | None = None,
                   cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(trust or pki.ca))
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def write_web_config(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(document))
    return path


# --- a real server with the configuration applied ----------------------------------------


@dataclass
class Served:
    url: str
    config: WebConfig


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[WebConfig], Any]]:
    runners: list[web.AppRunner] = []

    async def run(config: WebConfig) -> Served:
        snapshot = Snapshot(periods=("morning",))
        app = make_app(registry=CollectorRegistry(), source=lambda: snapshot, version="test")
        context = config.apply(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
        scheme = "https" if context is not None else "http"
        return Served(f"{scheme}://127.0.0.1:{port}", config)

    yield run
    for runner in runners:
        await runner.cleanup()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def get(url: str, *, context: ssl.SSLContext | bool | None = None,
              auth: tuple[str, str] | None = None) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(
        url, ssl=context if context is not None else True,
        headers=basic(*auth) if auth else None,
    ) as response:
        await response.read()
        return response.status, dict(response.headers)


# --- TLS -------------------------------------------------------------------------------


async def test_tls_handshake_and_plain_http_refused(tmp_path: Path, pki: Pki, serve: Any) -> None:
    config = load_web_config(write_web_config(tmp_path, {
        "tls_server_config": {"cert_file": str(pki.cert), "key_file": str(pki.key)},
    }))
    served = await serve(config)
    status, _ = await get(f"{served.url}/metrics", context=client_context(pki))
    assert status == 200
    # a client that does not trust our CA refuses the certificate
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await get(f"{served.url}/metrics", context=client_context(pki, trust=pki.other_ca))
    # plain HTTP to the TLS port gets no answer
    with pytest.raises(aiohttp.ClientError):
        await get(served.url.replace("https://", "http://") + "/metrics")


async def test_client_certificate_required(tmp_path: Path, pki: Pki, serve: Any) -> None:
    # relative paths are read from the web config file's directory
    for name in ("ca.crt", "server.crt", "server.key"):
        (tmp_path / name).write_bytes((pki.ca.parent / name).read_bytes())
    config = load_web_config(write_web_config(tmp_path, {
        "tls_server_config": {
            "cert_file": "server.crt", "key_file": "server.key", "client_ca_file": "ca.crt",
            "client_auth_type": "RequireAndVerifyClientCert",
        },
    }))
    served = await serve(config)
    ok = client_context(pki, cert=(pki.client_cert, pki.client_key))
    assert (await get(f"{served.url}/metrics", context=ok))[0] == 200
    for context in (
        client_context(pki),  # no client certificate
        client_context(pki, cert=(pki.rogue_cert, pki.rogue_key)),  # signed by another CA
    ):
        with pytest.raises(aiohttp.ClientError):
            await get(f"{served.url}/metrics", context=context)


# --- basic auth ------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_basic_auth_wrong_missing_and_right(tmp_path: Path, pki: Pki, serve: Any, tls: bool) -> None:
    document: dict[str, Any] = {"basic_auth_users": {"prometheus": HASH}}
    if tls:
        document["tls_server_config"] = {"cert_file": str(pki.cert), "key_file": str(pki.key)}
    served = await serve(load_web_config(write_web_config(tmp_path, document)))
    context = client_context(pki) if tls else None
    right = ("prometheus", PASSWORD)
    for path in ("/metrics", "/", "/-/healthy", "/-/ready"):
        status, headers = await get(served.url + path, context=context)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Basic realm=")
    for auth in (
        ("prometheus", "wrong"),
        ("nobody", PASSWORD),
        ("prometheus", PASSWORD + "x"),
        ("prometheus", "p" * 100),  # over bcrypt's 72 bytes
    ):
        assert (await get(f"{served.url}/metrics", context=context, auth=auth))[0] == 401
    assert (await get(f"{served.url}/metrics", context=context, auth=right))[0] == 200
    assert (await get(f"{served.url}/-/healthy", context=context, auth=right))[0] == 200


async def test_malformed_authorization_headers(serve: Any) -> None:
    served = await serve(WebConfig(basic_auth_users={"prometheus": HASH.encode()}))
    async with aiohttp.ClientSession() as session:
        for header in ("Basic", "Basic !!!", "Bearer abc", "Basic cHJvbWV0aGV1cw==", "Basic //79"):
            async with session.get(f"{served.url}/metrics", headers={"Authorization": header}) as r:
                assert r.status == 401, header


async def test_health_endpoints_can_stay_open(tmp_path: Path, serve: Any) -> None:
    served = await serve(load_web_config(write_web_config(tmp_path, {
        "basic_auth_users": {"prometheus": HASH}, "health_endpoints_open": True,
    })))
    assert (await get(f"{served.url}/-/healthy"))[0] == 200
    assert (await get(f"{served.url}/-/ready"))[0] == 503  # open, and honest: no scan yet
    assert (await get(f"{served.url}/metrics"))[0] == 401
    assert (await get(f"{served.url}/"))[0] == 401


async def test_successful_checks_are_cached_failures_are_not() -> None:
    auth = BasicAuth({"prometheus": HASH.encode()})
    assert await auth.check("prometheus", PASSWORD.encode())
    assert auth.bcrypt_checks == 1
    for _ in range(5):
        assert await auth.check("prometheus", PASSWORD.encode())
    assert auth.bcrypt_checks == 1  # no bcrypt per scrape
    for _ in range(2):
        assert not await auth.check("prometheus", b"wrong")
    assert auth.bcrypt_checks == 3  # a wrong password is never remembered as good
    assert not await auth.check("nobody", PASSWORD.encode())
    assert auth.bcrypt_checks == 4  # an unknown user costs a bcrypt round too


async def test_checks_do_not_block_the_event_loop() -> None:
    slow = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=12))  # ~0.2 s per check
    auth = BasicAuth({"u": slow})
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        assert not await auth.check("u", b"wrong")
    finally:
        task.cancel()
    assert ticks >= 5


# --- invalid configuration: one line, exit 2 ---------------------------------------------


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"tls_server_config": {"cert_file": "x"}}, "tls_server_config.key_file: required"),
        ({"tls_server_config": {"cert_file": "missing.crt", "key_file": "missing.key"}}, "cert_file: cannot read"),
        ({"basic_auth_users": {"prometheus": "plaintext"}}, "basic_auth_users.prometheus: not a bcrypt hash"),
        ({"basic_auth_users": {"prometheus": "$2b$12$short"}}, "basic_auth_users.prometheus: not a bcrypt hash"),
        ({"basic_auth_users": ["prometheus"]}, "basic_auth_users: must be a mapping"),
        ({"basic_auth_users": {"a:b": HASH}}, "is not a valid user name"),
        ({"typo": 1}, "typo: unknown key"),
        ({"health_endpoints_open": "yes please"}, "health_endpoints_open: must be true or false"),
        ("just text", "must be a YAML mapping"),
    ],
    ids=["no-key", "missing-files", "plaintext", "short-hash", "list", "colon", "unknown", "not-bool", "text"],
)
def test_invalid_web_config(tmp_path: Path, document: Any, message: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(WebConfigError, match=message.replace(".", r"\.")):
        load_web_config(path)


def test_invalid_tls_combinations(tmp_path: Path, pki: Pki) -> None:
    base = {"cert_file": str(pki.cert), "key_file": str(pki.key)}
    cases = [
        ({**base, "client_ca_file": str(pki.ca)}, "no client certificate is asked for"),
        ({**base, "client_auth_type": "RequireAndVerifyClientCert"}, "client_ca_file: required"),
        ({**base, "client_auth_type": "Sometimes"}, "client_auth_type: 'Sometimes' is not one of"),
        ({**base, "min_version": "SSL3"}, "min_version"),
        ({**base, "key_file": str(pki.client_key)}, "cannot load cert_file/key_file"),
        ({**base, "cert_file": str(tmp_path / "web.yml")}, "cannot load cert_file/key_file"),
    ]
    for tls, message in cases:
        path = write_web_config(tmp_path, {"tls_server_config": tls})
        with pytest.raises(WebConfigError, match=message):
            load_web_config(path)


async def test_cli_rejects_a_bad_web_config_with_one_line(tmp_path: Path) -> None:
    from tests.test_cli import run

    bad = write_web_config(tmp_path, {"basic_auth_users": {"prometheus": "hunter2"}})
    for args in (["demo"], ["serve", "--config.file", str(tmp_path / "unused.yml")]):
        if args[0] == "serve":
            (tmp_path / "unused.yml").write_text(yaml.safe_dump({
                "gitlab": {"url": "https://g.example", "token": "t0ken"},
                "teams": [{"name": "a", "members": ["x"]}],
            }))
        code, _, err = await run(*args, "--web.config.file", str(bad),
                                 "--web.listen-address", f"127.0.0.1:{free_port()}")
        assert code == 2
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines == [
            "gitlab-activity-exporter: error: web config: basic_auth_users.prometheus: not a bcrypt hash"
        ]


# --- end to end: the demo behind TLS and basic auth ----------------------------------------


async def test_demo_behind_tls_and_basic_auth(tmp_path: Path, pki: Pki) -> None:
    web_config = write_web_config(tmp_path, {
        "tls_server_config": {"cert_file": str(pki.cert), "key_file": str(pki.key)},
        "basic_auth_users": {"prometheus": HASH},
        "health_endpoints_open": True,
    })
    port = free_port()
    proc = await start("demo", "--web.listen-address", f"127.0.0.1:{port}",
                       "--web.config.file", str(web_config))
    url = f"https://127.0.0.1:{port}"
    context = client_context(pki)
    try:
        for _ in range(200):
            try:
                if (await get(f"{url}/-/ready", context=context))[0] == 200:
                    break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the demo never became ready")
        assert (await get(f"{url}/metrics", context=context))[0] == 401
        right = ("prometheus", PASSWORD)
        async with aiohttp.ClientSession() as session, session.get(
            f"{url}/metrics", ssl=context, headers=basic(*right)
        ) as response:
            assert response.status == 200
            assert "gitlab_activity_user_commits{" in await response.text()
    finally:
        code, seconds, err = await stop(proc)
    assert code == 0, err
    assert seconds < 5
    assert "Traceback" not in err
    assert PASSWORD not in err


async def test_an_unknown_user_costs_as_much_as_a_wrong_password() -> None:
    import time

    slow = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=11))
    auth = BasicAuth({"u": slow})
    began = time.monotonic()
    assert not await auth.check("u", b"wrong")
    known = time.monotonic() - began
    began = time.monotonic()
    assert not await auth.check("nobody", b"wrong")
    unknown = time.monotonic() - began
    assert unknown > known / 3, (known, unknown)  # same cost factor, not a cheap dummy
