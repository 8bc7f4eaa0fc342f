"""Protection of the web endpoints: TLS and basic auth, as Prometheus' exporter-toolkit.

``--web.config.file`` names a YAML file in the exporter-toolkit format (the subset
below); relative paths in it are read relative to the file::

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_ca_file: ca.crt                       # optional
      client_auth_type: RequireAndVerifyClientCert # optional, see CLIENT_AUTH_TYPES
      min_version: TLS12                           # optional: TLS12 (default) or TLS13
    basic_auth_users:                              # optional: name -> bcrypt hash
      prometheus: $2b$12$...
    health_endpoints_open: true                    # optional: /-/healthy and /-/ready
                                                   # answer without credentials

Passwords are checked with ``bcrypt.checkpw`` (constant-time) in a worker thread, so a
check never blocks the event loop; successful checks are remembered (keyed by a salted
SHA-256 of the credentials, never the password itself) so a scrape every few seconds
does not cost a bcrypt round each time.

The work a flood of wrong passwords can cause is bounded, and cannot delay a correct
scrape: bcrypt runs on a pool of its own (:data:`BCRYPT_THREADS`, apart from the loop's
default executor that DNS lookups use); at most :data:`MAX_CHECKS_IN_FLIGHT` checks are
under way at once and at most one per client address; a request beyond that is answered
429 (``Retry-After: 1``) at once, without a bcrypt round. Credentials that succeeded
before skip all of it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from aiohttp import web

__all__ = [
    "CLIENT_AUTH_TYPES",
    "OPEN_HEALTH_PATHS",
    "BasicAuth",
    "TLSSettings",
    "WebConfig",
    "WebConfigError",
    "load_web_config",
    "parse_web_config",
]

CLIENT_AUTH_TYPES: Mapping[str, ssl.VerifyMode] = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = {
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
OPEN_HEALTH_PATHS = frozenset({"/-/healthy", "/-/ready"})
REALM = "gitlab-activity-exporter"
CACHE_SIZE = 256
BCRYPT_THREADS = 2
MAX_CHECKS_IN_FLIGHT = 4
_TOP_KEYS = ("tls_server_config", "basic_auth_users", "health_endpoints_open")
_TLS_KEYS = ("cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version")


class WebConfigError(Exception):
    """A problem with the web configuration file; ``str()`` is one line naming the key."""


@dataclass(frozen=True, slots=True)
class TLSSettings:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"

    def ssl_context(self) -> ssl.SSLContext:
        """A server context; raises :class:`WebConfigError` on unusable files."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = TLS_VERSIONS[self.min_version]
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(
                f"tls_server_config: cannot load cert_file/key_file: {_why(exc)}"
            ) from None
        if self.client_ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.client_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise WebConfigError(
                    f"tls_server_config.client_ca_file: cannot load: {_why(exc)}"
                ) from None
        context.verify_mode = CLIENT_AUTH_TYPES[self.client_auth_type]
        return context


@dataclass(frozen=True)
class WebConfig:
    tls: TLSSettings | None = None
    basic_auth_users: Mapping[str, bytes] = field(default_factory=dict)
    health_endpoints_open: bool = False

    def ssl_context(self) -> ssl.SSLContext | None:
        return self.tls.ssl_context() if self.tls is not None else None

    def _open_paths(self) -> frozenset[str]:
        return OPEN_HEALTH_PATHS if self.health_endpoints_open else frozenset()

    def apply(self, app: web.Application) -> ssl.SSLContext | None:
        """Add the auth middleware to ``app`` (before it starts); the TLS context or None."""
        context = self.ssl_context()
        if self.basic_auth_users:
            auth = BasicAuth(self.basic_auth_users, open_paths=self._open_paths())
            app.middlewares.append(auth.middleware)

            async def close(_app: web.Application) -> None:
                auth.close()

            app.on_cleanup.append(close)
        return context


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------- parsing


def _path(value: Any, key: str, base: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise WebConfigError(f"{key}: must be a file path")
    path = Path(value)
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise WebConfigError(f"{key}: cannot read {value}: no such file")
    return path


def _tls(raw: Any, base: Path) -> TLSSettings:
    if not isinstance(raw, dict):
        raise WebConfigError("tls_server_config: must be a mapping")
    unknown = sorted(set(map(str, raw)) - set(_TLS_KEYS))
    if unknown:
        raise WebConfigError(f"tls_server_config.{unknown[0]}: unknown key")
    for key in ("cert_file", "key_file"):
        if key not in raw:
            raise WebConfigError(f"tls_server_config.{key}: required")
    auth = raw.get("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH_TYPES:
        raise WebConfigError(
            f"tls_server_config.client_auth_type: {auth!r} is not one of "
            + ", ".join(CLIENT_AUTH_TYPES)
        )
    version = raw.get("min_version", "TLS12")
    if version not in TLS_VERSIONS:
        raise WebConfigError(
            f"tls_server_config.min_version: {version!r} is not one of " + ", ".join(TLS_VERSIONS)
        )
    ca = raw.get("client_ca_file")
    ca_path = None if ca is None else _path(ca, "tls_server_config.client_ca_file", base)
    if ca_path is not None and auth == "NoClientCert":
        raise WebConfigError(
            "tls_server_config.client_auth_type: client_ca_file is set but no client "
            "certificate is asked for; use VerifyClientCertIfGiven or RequireAndVerifyClientCert"
        )
    if ca_path is None and auth != "NoClientCert":
        raise WebConfigError(
            f"tls_server_config.client_ca_file: required with client_auth_type {auth}"
        )
    return TLSSettings(
        cert_file=_path(raw["cert_file"], "tls_server_config.cert_file", base),
        key_file=_path(raw["key_file"], "tls_server_config.key_file", base),
        client_ca_file=ca_path,
        client_auth_type=auth,
        min_version=version,
    )


def _users(raw: Any) -> dict[str, bytes]:
    if not isinstance(raw, dict):
        raise WebConfigError("basic_auth_users: must be a mapping of user name to bcrypt hash")
    users: dict[str, bytes] = {}
    for name, hashed in raw.items():
        if not isinstance(name, str) or not name or ":" in name:
            raise WebConfigError(f"basic_auth_users: {name!r} is not a valid user name")
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise WebConfigError(f"basic_auth_users.{name}: not a bcrypt hash")
        value = hashed.strip().encode()
        try:
            bcrypt.checkpw(b"", value)  # rejects a malformed hash here, not at first scrape
        except ValueError:
            raise WebConfigError(f"basic_auth_users.{name}: not a bcrypt hash") from None
        users[name] = value
    return users


def parse_web_config(document: Any, base: Path) -> WebConfig:
    """Validate a parsed YAML document; relative paths are taken from ``base``."""
    if document is None:
        return WebConfig()
    if not isinstance(document, dict):
        raise WebConfigError("must be a YAML mapping")
    unknown = sorted(set(map(str, document)) - set(_TOP_KEYS))
    if unknown:
        raise WebConfigError(f"{unknown[0]}: unknown key")
    open_health = document.get("health_endpoints_open", False)
    if not isinstance(open_health, bool):
        raise WebConfigError("health_endpoints_open: must be true or false")
    raw_tls = document.get("tls_server_config")
    config = WebConfig(
        tls=None if raw_tls is None else _tls(raw_tls, base),
        basic_auth_users=_users(document.get("basic_auth_users") or {}),
        health_endpoints_open=open_health,
    )
    config.ssl_context()  # unusable certificates or keys fail now, with a clear message
    return config


def load_web_config(path: Path | str) -> WebConfig:
    """Read and validate the web configuration file; :class:`WebConfigError` on any problem."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WebConfigError(f"cannot read {file}: {_why(exc)}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise WebConfigError(f"not valid YAML{where}") from None
    return parse_web_config(document, file.parent)


# --------------------------------------------------------------------------- basic auth

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BasicAuth:
    """HTTP basic auth against bcrypt hashes, with a cache of successful checks and a
    bound on the bcrypt work clients can cause (see the module's documentation)."""

    def __init__(self, users: Mapping[str, bytes], *, open_paths: frozenset[str] = frozenset()):
        self._users = dict(users)
        self._open_paths = open_paths
        # checked when the user is unknown, so a wrong name costs as much as a wrong password
        self._dummy = bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=_cost(users)))
        self._salt = os.urandom(16)
        self._good: OrderedDict[bytes, None] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None
        self._checking: set[str] = set()  # client addresses with a check under way
        self.bcrypt_checks = 0
        """How many times bcrypt ran (for tests)."""
        self.peak_in_flight = 0
        """The most checks under way at once (for tests)."""
        self.refused = 0
        """Requests answered 429 because the checks were busy."""

    def _key(self, user: str, password: bytes) -> bytes:
        return hashlib.sha256(self._salt + user.encode() + b"\0" + password).digest()

    def known_good(self, user: str, password: bytes) -> bool:
        """Whether these credentials succeeded recently (no bcrypt round needed)."""
        key = self._key(user, password)
        if key in self._good:
            self._good.move_to_end(key)
            return True
        return False

    async def check(self, user: str, password: bytes) -> bool:
        if self.known_good(user, password):
            return True
        hashed = self._users.get(user)
        self.bcrypt_checks += 1
        if self._pool is None:
            self._pool = ThreadPoolExecutor(BCRYPT_THREADS, thread_name_prefix="bcrypt")
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(self._pool, _checkpw, password, hashed or self._dummy)
        if ok and hashed is not None:
            self._good[self._key(user, password)] = None
            while len(self._good) > CACHE_SIZE:
                self._good.popitem(last=False)
            return True
        return False

    async def _bounded_check(self, client: str, user: str, password: bytes) -> bool | None:
        """:meth:`check`, or ``None`` at once when the checks are busy for ``client``."""
        if len(self._checking) >= MAX_CHECKS_IN_FLIGHT or client in self._checking:
            self.refused += 1
            return None
        self._checking.add(client)
        self.peak_in_flight = max(self.peak_in_flight, len(self._checking))
        try:
            return await self.check(user, password)
        finally:
            self._checking.discard(client)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in self._open_paths:
            return await handler(request)
        credentials = _parse_basic(request.headers.get("Authorization", ""))
        if credentials is not None:
            if self.known_good(*credentials):
                return await handler(request)
            ok = await self._bounded_check(request.remote or "", *credentials)
            if ok:
                return await handler(request)
            if ok is None:
                return web.Response(
                    status=429,
                    text="Too many authentication attempts at once; retry\n",
                    headers={"Retry-After": "1"},
                )
        return web.Response(
            status=401,
            text="Unauthorized\n",
            headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
        )


def _cost(users: Mapping[str, bytes]) -> int:
    """The highest bcrypt cost among the users' hashes (``$2b$12$...`` -> 12)."""
    costs = [int(h[4:6]) for h in users.values() if h[4:6].isdigit()]
    return min(31, max([4, *costs]))


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # e.g. a password over bcrypt's 72 bytes: never a match
        return False


def _parse_basic(header: str) -> tuple[str, bytes] | None:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None
