"""The front door: one request that says whether GitLab can be reached, and if not, why.

Before a scan, :func:`probe` asks ``GET /api/v4/user`` once (and ``/version``). When
that fails, the failure is a door mistake, not something per user: a
:class:`ConnectionProblem` names its cause in one line with a short ``reason`` label
(:data:`CONNECTION_REASONS`), so the scan can stop at once instead of timing out user
after user. What the answer says about the token (who, administrator or not) is kept
in :class:`ServerInfo` for ``check-config --connect`` and the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from exporter.gitlab.client import GitLabClient, ProbeAnswer
from exporter.gitlab.errors import GitLabError

CONNECTION_REASONS = (
    "connection_refused",
    "name_not_resolved",
    "tls_untrusted",
    "tls_mismatch",
    "tls_error",
    "token_rejected",
    "not_gitlab_api",
    "redirected",
    "timeout",
    "unavailable",
    "connection_error",
)
"""Labels of ``gitlab_activity_connection_failures_total{reason}``."""
PASSING_REASONS = frozenset({"timeout", "unavailable", "connection_error"})

_TLS_MISMATCH = ("wrong_version_number", "wrong version number", "record layer", "packet length",
                 "http request", "unknown protocol")
_PLAIN_TO_TLS = "plain http request was sent to https port"  # nginx's 400 page


class ConnectionProblem(Exception):
    """GitLab cannot be used at all: ``reason`` a label, ``str()`` one line saying why."""

    def __init__(self, reason: str, message: str) -> None:
        assert reason in CONNECTION_REASONS, reason
        self.reason = reason
        self.message = " ".join(message.split())
        super().__init__(self.message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.reason, self.message))

    @property
    def passing(self) -> bool:
        """A busy or slow GitLab rather than a door mistake: worth a scan's retries."""
        return self.reason in PASSING_REASONS


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """Who the token is, and which GitLab answered."""

    username: str
    name: str
    is_admin: bool
    is_auditor: bool
    version: str | None

    def describe(self, url: str) -> str:
        """One line for ``check-config --connect``."""
        version = f"GitLab {self.version}" if self.version else "GitLab (version not shown)"
        who = f"token of {self.username}" + (f" ({self.name})" if self.name else "")
        if self.is_admin:
            role = "an administrator: sees every user and project"
        elif self.is_auditor:
            role = "an auditor: sees every user and project, read-only"
        else:
            role = (
                "not an administrator: users with private profiles fail as private_profile, "
                f"code of projects where {self.username} is only a Guest (or not a member of "
                "a private one) is not counted, and on gitlab.com GET /users/:id is limited "
                "to 300 requests per 10 minutes"
            )
        return f"connected to {version} at {url}; {who}, {role}"


def client_ssl(verify: bool, ca_file: Path | None) -> ssl.SSLContext | bool:
    """The ``ssl`` of the session's connector: ``False`` skips certificate checks; a CA
    bundle is trusted besides the system's CAs."""
    if not verify:
        return False
    if ca_file is None:
        return True
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(ca_file))
    return context


async def probe(client: GitLabClient, *, within: float, version: bool = True) -> ServerInfo:
    """Ask GitLab who the token is; :class:`ConnectionProblem` when that is impossible.

    Door mistakes (nothing listening, a name that does not resolve, TLS trouble, a
    rejected token, a URL that is not a GitLab API) fail on the first answer, within
    ``within`` seconds. A GitLab that is only busy or slow (5xx, 429, no answer in
    time, a connection cut) is a problem that passes (:attr:`ConnectionProblem.passing`):
    a scan goes on and its requests retry as always. ``version``: also ask ``/version``.
    """
    answer = await _ask(client, "/user", within)
    if answer.status in (429, 500, 502, 503, 504) or 520 <= answer.status <= 530:
        raise ConnectionProblem(
            "unavailable",
            f"GitLab at {client.base_url} is unavailable: HTTP {answer.status} to "
            "GET /api/v4/user",
        )
    data = _user_from(answer, client.base_url)
    if not isinstance(data, dict) or not isinstance(data.get("username"), str):
        raise _not_gitlab(client.base_url, "GET /api/v4/user did not answer with a user")
    found: str | None = None
    if version:
        try:
            about = await client.get_json("/version", endpoint="/version")
            if isinstance(about, dict) and isinstance(about.get("version"), str):
                found = about["version"]
        except GitLabError:
            pass  # not fatal: the token was accepted
    name = data.get("name")
    return ServerInfo(
        username=data["username"],
        name=name if isinstance(name, str) else "",
        is_admin=data.get("is_admin") is True,
        is_auditor=data.get("is_auditor") is True,
        version=found,
    )


async def _ask(client: GitLabClient, path: str, within: float) -> ProbeAnswer:
    base = client.base_url
    url = URL(base)
    try:
        return await client.probe_get(path, within=within)
    except aiohttp.ClientConnectorCertificateError as exc:
        raise ConnectionProblem(
            "tls_untrusted",
            f"TLS certificate of {url.host} not trusted ({_cert_reason(exc)}): set gitlab.ca_file "
            "to the CA bundle that signed it (or gitlab.tls_verify: false)",
        ) from None
    except aiohttp.ClientConnectorSSLError as exc:
        text = str(exc).lower()
        if any(marker in text for marker in _TLS_MISMATCH):
            raise ConnectionProblem(
                "tls_mismatch",
                f"{url.host}:{url.port} does not speak TLS: https:// was sent to a plain HTTP "
                f"port; use http:// in gitlab.url, or the TLS port",
            ) from None
        raise ConnectionProblem(
            "tls_error", f"TLS handshake with {url.host} failed: {_first(exc)}"
        ) from None
    except aiohttp.ClientConnectorDNSError:
        raise ConnectionProblem(
            "name_not_resolved",
            f"GitLab host name {url.host!r} does not resolve (check gitlab.url)",
        ) from None
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, ConnectionRefusedError):
            raise ConnectionProblem(
                "connection_refused",
                f"connection to {url.host}:{url.port} refused: nothing listens there "
                "(check gitlab.url)",
            ) from None
        raise ConnectionProblem(
            "connection_error", f"cannot connect to {url.host}:{url.port}: {_first(exc)}"
        ) from None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
            aiohttp.ClientResponseError) as exc:
        if url.scheme == "http" and await _speaks_tls(url, within):
            raise ConnectionProblem(
                "tls_mismatch",
                f"{url.host}:{url.port} speaks TLS: plain HTTP was sent to a TLS port; use "
                "https:// in gitlab.url",
            ) from None
        raise ConnectionProblem(
            "connection_error", f"{url.host}:{url.port} closed the connection: {_first(exc)}"
        ) from None
    except TimeoutError:
        raise ConnectionProblem(
            "timeout", f"GitLab at {base} did not answer within {within:g}s"
        ) from None
    except aiohttp.ClientError as exc:
        raise ConnectionProblem(
            "connection_error", f"request to {base} failed: {_first(exc)}"
        ) from None


def _user_from(answer: ProbeAnswer, base: str) -> Any:
    status = answer.status
    body = answer.body
    if status == 400 and _PLAIN_TO_TLS in body.decode("utf-8", "replace").lower():
        raise ConnectionProblem(
            "tls_mismatch", "plain HTTP was sent to a TLS port; use https:// in gitlab.url"
        )
    if status == 401:
        raise ConnectionProblem(
            "token_rejected",
            "GitLab rejected the token (401): it is wrong, expired or revoked; check "
            "GITLAB_TOKEN, gitlab.token or gitlab.token_file",
        )
    if status == 403:
        raise ConnectionProblem(
            "token_rejected",
            "GitLab refused the token (403): it needs the read_api scope (and an active user)",
        )
    if status in (301, 302, 303, 307, 308):
        where = answer.location or "elsewhere"
        raise ConnectionProblem(
            "redirected",
            f"{base} redirects to {where}: set gitlab.url to the address GitLab answers on",
        )
    if status == 404:
        raise _not_gitlab(base, "GET /api/v4/user answered 404")
    if not 200 <= status < 300:
        raise ConnectionProblem(
            "unavailable", f"GitLab at {base} answered HTTP {status} to GET /api/v4/user"
        )
    if "json" not in answer.content_type.lower():
        kind = answer.content_type or "no content type"
        raise _not_gitlab(base, f"GET /api/v4/user answered {kind}, not JSON")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _not_gitlab(base, "GET /api/v4/user answered something that is not JSON") from None


def _not_gitlab(base: str, what: str) -> ConnectionProblem:
    path = URL(base).path.rstrip("/")
    hint = (
        f"gitlab.url must be GitLab's root URL, without the path {path!r}"
        if path
        else "check gitlab.url"
    )
    return ConnectionProblem("not_gitlab_api", f"{base} is not a GitLab API: {what}; {hint}")


async def _speaks_tls(url: URL, within: float) -> bool:
    """Whether the port of ``url`` completes a TLS handshake (certificate not checked)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(url.host, url.port, ssl=context), within
        )
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return True


def _cert_reason(exc: aiohttp.ClientConnectorCertificateError) -> str:
    cert_error = exc.certificate_error
    reason = getattr(cert_error, "verify_message", None) or str(cert_error)
    return _short(str(reason))


def _first(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return _short(text)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:159] + "…"
