"""State that survives restarts: the commit store, discoveries, merge requests and issues
kept per user, and the last snapshot.

``scan.state_file`` is an SQLite database (standard library ``sqlite3``). It is written
whole into a temporary file next to it and renamed over it, so a crash mid-write leaves
the previous state readable. It carries a schema version and a fingerprint of the
settings its numbers depend on (GitLab URL, look-back, time zone, periods, shard). A missing,
unreadable, corrupt, foreign-version or other-settings file means a full scan and one log
line, never a crash; a state file that cannot be written is a warning.

The file is the exporter's own, and nothing else is ever overwritten:

- it is marked (SQLite ``application_id``); an existing file that is something else (a
  text file, another application's database, the configuration) is refused at start-up
  with :class:`StateFileError` (exit 2), :func:`check_state_file`;
- one exporter writes it: :class:`StateLock` holds an exclusive ``flock`` on a lock file
  beside it for the process's life, a second exporter is refused naming the holder;
- every write goes to a temporary file of its own (``mkstemp``), mode 0600, renamed over
  the state file;
- no credentials: a ``user:password@`` in ``gitlab.url`` is left out of the fingerprint;
- ids are stored as text, so any id GitLab sends (2^63 and above too) round-trips.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

import structlog

from exporter.authored_items import AuthoredItemStore, UserItems
from exporter.commit_store import CommitStore, ProjectState
from exporter.config import Config
from exporter.discovery import Discovery, DiscoveryCache
from exporter.gitlab.api import ItemRef, UserDetail
from exporter.snapshot import (
    ScanSummary,
    Snapshot,
    UserState,
    UserStats,
    frozen_map,
    settings_of,
)

log = structlog.get_logger("exporter.state")

SCHEMA_VERSION = 6  # 5: users keep their profile URL; 6: branch heads and full reads kept
APPLICATION = "gitlab-activity-exporter"
APPLICATION_ID = 0x474C4145  # "GLAE", in the SQLite header (PRAGMA application_id)
SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE projects (
    id TEXT PRIMARY KEY, fetched_at TEXT NOT NULL, activity TEXT, watermark TEXT,
    pushed TEXT, full_at TEXT);
CREATE TABLE branches (
    project_id TEXT NOT NULL, name TEXT NOT NULL, head TEXT NOT NULL,
    PRIMARY KEY (project_id, name));
CREATE TABLE commits (
    project_id TEXT NOT NULL, sha TEXT NOT NULL, author_name TEXT NOT NULL,
    author_email TEXT NOT NULL, authored TEXT NOT NULL, PRIMARY KEY (project_id, sha));
CREATE TABLE users (
    key TEXT PRIMARY KEY, id TEXT NOT NULL, username TEXT NOT NULL, name TEXT NOT NULL,
    state TEXT NOT NULL, public_email TEXT, refreshed_at TEXT NOT NULL, web_url TEXT NOT NULL);
CREATE TABLE listings (
    key TEXT NOT NULL, kind TEXT NOT NULL, project_id TEXT NOT NULL, activity TEXT);
CREATE TABLE snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL);
CREATE TABLE skipped_projects (project_id TEXT PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE hidden_users (
    key TEXT PRIMARY KEY, id TEXT NOT NULL, username TEXT NOT NULL, name TEXT NOT NULL,
    state TEXT NOT NULL, refreshed_at TEXT NOT NULL);
CREATE TABLE item_syncs (kind TEXT PRIMARY KEY, full_sync_at TEXT, declined_at TEXT);
CREATE TABLE item_users (
    kind TEXT NOT NULL, key TEXT NOT NULL, synced_at TEXT NOT NULL, PRIMARY KEY (kind, key));
CREATE TABLE items (
    kind TEXT NOT NULL, key TEXT NOT NULL, id TEXT NOT NULL, project_id TEXT NOT NULL,
    state TEXT NOT NULL, created TEXT NOT NULL);
"""


class StateError(Exception):
    """The state file cannot be used; the message says why in a few words."""


class StateFileError(Exception):
    """``scan.state_file`` must not be touched (someone else's file, or another exporter
    holds it); ``str()`` is one line naming the file. The command exits 2."""


@dataclass(frozen=True, slots=True)
class SavedState:
    store: CommitStore
    discoveries: dict[str, Discovery]
    snapshot: Snapshot
    #: merge requests and issues per user, by kind (``merge_requests``, ``issues``)
    items: dict[str, AuthoredItemStore] = dataclasses.field(default_factory=dict)
    #: GitLab's external host as learned from its web_urls
    external_host: str | None = None
    #: users whose activity the token cannot see, with when that was found
    hidden: dict[str, tuple[UserDetail, datetime]] = dataclasses.field(default_factory=dict)


def fingerprint(config: Config, shard: str = "0/1") -> str:
    """The settings stored numbers depend on (``shard``: ``index/count`` of the users)."""
    scan = config.scan
    return json.dumps(
        [_without_credentials(config.gitlab.url), scan.lookback_days, scan.timezone,
         sorted(scan.periods.items()), shard, scan.count_merge_commits]
    )


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _req_dt(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise StateError("a stored time has no offset")
    return moment


# ----------------------------------------------------------------------- snapshot


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _stats_from(data: Any) -> UserStats | None:
    if data is None:
        return None
    values: dict[str, Any] = {}
    for f in dataclasses.fields(UserStats):
        value = data[f.name]
        if isinstance(value, dict):
            value = frozen_map(value)
        elif isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return UserStats(**values)


def _stats_to(stats: UserStats | None) -> Any:
    if stats is None:
        return None
    return {f.name: _plain(getattr(stats, f.name)) for f in dataclasses.fields(UserStats)}


def snapshot_to_json(snapshot: Snapshot) -> str:
    users = {
        name: {
            "stats": _stats_to(s.stats),
            "last_success": s.last_success,
            "failures": dict(s.failures),
            "last_error": s.last_error,
            "last_error_message": s.last_error_message,
            "failing_since": s.failing_since,
        }
        for name, s in snapshot.users.items()
    }
    last = snapshot.last_scan
    return json.dumps(
        {
            "users": users,
            "teams": {k: list(v) for k, v in snapshot.teams.items()},
            "team_projects": dict(snapshot.team_projects),
            "info_teams": sorted(snapshot.info_teams) if snapshot.info_teams is not None else None,
            "periods": list(snapshot.periods),
            "last_scan": dataclasses.asdict(last) if last is not None else None,
            "last_complete_scan_end": snapshot.last_complete_scan_end,
            "scans_total": snapshot.scans_total,
            "window_end": snapshot.window_end,
            "projects_skipped": dict(snapshot.projects_skipped),
            "project_read_failures": dict(snapshot.project_read_failures),
        }
    )


def snapshot_from_json(text: str, config: Config) -> Snapshot:
    data = json.loads(text)
    users = {
        name: UserState(
            username=name,
            stats=_stats_from(u["stats"]),
            last_success=u["last_success"],
            failures=frozen_map({str(k): int(v) for k, v in u["failures"].items()}),
            last_error=u["last_error"],
            last_error_message=u["last_error_message"],
            failing_since=u["failing_since"],
        )
        for name, u in data["users"].items()
    }
    last = data["last_scan"]
    return Snapshot(
        users=frozen_map(users),
        teams=frozen_map({k: tuple(v) for k, v in data["teams"].items()}),
        team_projects=frozen_map({str(k): str(v) for k, v in data["team_projects"].items()}),
        info_teams=frozenset(data["info_teams"]) if data["info_teams"] is not None else None,
        periods=tuple(data["periods"]),
        last_scan=ScanSummary(**last) if last is not None else None,
        last_complete_scan_end=data["last_complete_scan_end"],
        scans_total=int(data["scans_total"]),
        weights=config.score_weights,  # applied when rendering: today's configuration
        settings=settings_of(config),
        window_end=data["window_end"],
        projects_skipped=_counts(data.get("projects_skipped")),
        project_read_failures=_counts(data.get("project_read_failures")),
    )


def _counts(data: Any) -> Mapping[str, int]:
    return frozen_map({str(k): int(v) for k, v in (data or {}).items()})


# ----------------------------------------------------------------------- ownership


def _refuse(path: Path, what: str) -> StateFileError:
    return StateFileError(
        f"scan.state_file: {str(path)!r} {what}; it is left untouched: move it away "
        "or point scan.state_file at a new file"
    )


def check_state_file(path: Path) -> None:
    """Raise :class:`StateFileError` when ``path`` exists and is not this exporter's
    state file. Ours, even damaged inside (a full scan follows), is what starts with the
    SQLite header carrying our ``application_id`` (or, written before it was set, the
    ``meta`` row naming this application); an empty file is taken as new."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise _refuse(path, "is a directory") from None
    except OSError as exc:
        raise _refuse(path, f"cannot be read ({exc.strerror or exc})") from None
    if not header:
        return
    if not header.startswith(SQLITE_MAGIC) or len(header) < 72:
        raise _refuse(path, "exists and is not a state file of this exporter")
    application_id = int.from_bytes(header[68:72], "big")
    if application_id == APPLICATION_ID:
        return
    if application_id == 0 and _names_this_application(path):
        return  # written before the application id was set
    raise _refuse(path, "is an SQLite database of another application")


def _names_this_application(path: Path) -> bool:
    try:
        with _read_only(path) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'application'").fetchone()
    except sqlite3.Error:
        return False
    return row is not None and row[0] == APPLICATION


class StateLock:
    """An exclusive lock on ``scan.state_file`` for this process's life: a lock file
    beside it (``.NAME.lock``, mode 0600) held with ``flock`` and naming its holder.

    The kernel drops the lock when the process dies, however it dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(f".{path.name}.lock")
        self._handle: BinaryIO | None = None

    def acquire(self) -> None:
        """Take the lock; :class:`StateFileError` naming the holder when another
        process has it; ``OSError`` when the lock file cannot be made at all."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        handle = os.fdopen(fd, "r+b")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = handle.read(200).decode("utf-8", "replace").strip() or "unknown"
            handle.close()
            raise StateFileError(
                f"scan.state_file: {str(self.path)!r} is in use by another exporter "
                f"({holder}); give each exporter its own state file"
            ) from None
        except BaseException:
            handle.close()
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the flock
            self._handle = None


def claim_state_file(path: Path) -> StateLock | None:
    """Check ``path`` is ours (or absent) and lock it for this process; blocking.

    ``None`` (after a warning) when no lock file can be made beside it: the state then
    cannot be written either, which is the warning's subject at each save."""
    check_state_file(path)
    lock = StateLock(path)
    try:
        lock.acquire()
    except OSError as exc:
        log.warning("state file cannot be locked", path=str(path), error=str(exc))
        return None
    return lock


# ----------------------------------------------------------------------- writing


def save_state(
    path: Path,
    *,
    config: Config,
    store: CommitStore,
    discovery: DiscoveryCache,
    snapshot: Snapshot,
    items: Mapping[str, AuthoredItemStore] | None = None,
    shard: str = "0/1",
    external_host: str | None = None,
) -> None:
    """Write the whole state to ``path`` atomically (temporary file, then rename).

    Blocking; call it between scans (nothing else mutates the store meanwhile).
    """
    # a name of its own (two writers never share one), created 0600
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        _write(tmp, config=config, store=store, discovery=discovery, snapshot=snapshot,
               items=items, shard=shard, external_host=external_host)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _write(
    tmp: Path,
    *,
    config: Config,
    store: CommitStore,
    discovery: DiscoveryCache,
    snapshot: Snapshot,
    items: Mapping[str, AuthoredItemStore] | None,
    shard: str,
    external_host: str | None = None,
) -> None:
    conn = sqlite3.connect(tmp)
    try:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")  # the rename below is the commit point
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.executescript(_SCHEMA)
        conn.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [
                ("application", APPLICATION),
                ("schema_version", str(SCHEMA_VERSION)),
                ("fingerprint", fingerprint(config, shard)),
                *([("external_host", external_host)] if external_host else []),
            ],
        )
        conn.executemany(
            "INSERT INTO projects VALUES (?, ?, ?, ?, ?, ?)",
            (
                (str(pid), p.fetched_at.isoformat(), _iso(p.activity), _iso(p.watermark),
                 _iso(p.pushed), _iso(p.full_at))
                for pid, p in store.projects.items()
            ),
        )
        conn.executemany(
            "INSERT INTO branches VALUES (?, ?, ?)",
            (
                (str(pid), name, head)
                for pid, p in store.projects.items()
                for name, head in p.heads.items()
            ),
        )
        conn.executemany(
            "INSERT INTO commits VALUES (?, ?, ?, ?, ?)",
            (
                (str(pid), sha, name, email, authored.isoformat())
                for pid, p in store.projects.items()
                for sha, name, email, authored in p.commits.values()
            ),
        )
        conn.executemany(
            "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (key, str(d.user.id), d.user.username, d.user.name, d.user.state,
                 d.user.public_email, d.refreshed_at.isoformat(), d.user.web_url)
                for key, d in discovery.entries.items()
            ),
        )
        conn.executemany(
            "INSERT INTO hidden_users VALUES (?, ?, ?, ?, ?, ?)",
            (
                (key, str(u.id), u.username, u.name, u.state, at.isoformat())
                for key, (u, at) in discovery.hidden.items()
            ),
        )
        conn.executemany(
            "INSERT INTO listings VALUES (?, ?, ?, ?)",
            (
                (key, kind, str(pid), _iso(activity))
                for key, d in discovery.entries.items()
                for kind, listing in (("personal", d.personal), ("contributed", d.contributed))
                for pid, activity in listing.items()
            ),
        )
        conn.execute("INSERT INTO snapshot VALUES (1, ?)", (snapshot_to_json(snapshot),))
        conn.executemany(
            "INSERT INTO skipped_projects VALUES (?, ?)",
            ((str(pid), p.skipped) for pid, p in store.projects.items() if p.skipped is not None),
        )
        kinds = dict(items or {})
        conn.executemany(
            "INSERT INTO item_syncs VALUES (?, ?, ?)",
            ((kind, _iso(s.full_sync_at), _iso(s.declined_at)) for kind, s in kinds.items()),
        )
        conn.executemany(
            "INSERT INTO item_users VALUES (?, ?, ?)",
            (
                (kind, key, kept.synced_at.isoformat())
                for kind, s in kinds.items()
                for key, kept in s.users.items()
            ),
        )
        conn.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)",
            (
                (kind, key, str(i.id), str(i.project_id), i.state, i.created_at.isoformat())
                for kind, s in kinds.items()
                for key, kept in s.users.items()
                for i in kept.items.values()
            ),
        )
        conn.commit()
    finally:
        conn.close()


# ----------------------------------------------------------------------- reading


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


def _read(path: Path, config: Config, shard: str) -> SavedState:
    with _read_only(path) as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("application") != APPLICATION:
            raise StateError("not a state file of this exporter")
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise StateError(
                f"schema version {meta.get('schema_version')!r}, expected {SCHEMA_VERSION}"
            )
        if meta.get("fingerprint") != fingerprint(config, shard):
            raise StateError(
                "written for other settings (GitLab URL, window, zone, periods or shard)"
            )
        store = CommitStore()
        for pid, fetched_at, activity, watermark, pushed, full_at in conn.execute(
            "SELECT * FROM projects"
        ):
            store.projects[int(pid)] = ProjectState(
                fetched_at=_req_dt(fetched_at),
                activity=_dt(activity),
                watermark=_dt(watermark),
                pushed=_dt(pushed),
                full_at=_dt(full_at),
            )
        for pid, name, head in conn.execute("SELECT * FROM branches"):
            store.projects[int(pid)].heads[name] = head
        for pid, sha, name, email, authored in conn.execute("SELECT * FROM commits"):
            store.projects[int(pid)].commits[sha] = (sha, name, email, _req_dt(authored))
        for pid, reason in conn.execute("SELECT * FROM skipped_projects"):
            store.projects[int(pid)].skipped = reason
        listings: dict[tuple[str, str], dict[int, datetime | None]] = {}
        for key, kind, pid, activity in conn.execute("SELECT * FROM listings"):
            listings.setdefault((key, kind), {})[int(pid)] = _dt(activity)
        discoveries: dict[str, Discovery] = {}
        for key, uid, username, name, state, email, refreshed, web_url in conn.execute(
            "SELECT * FROM users"
        ):
            discoveries[key] = Discovery(
                user=UserDetail(
                    id=int(uid), username=username, name=name, state=state, public_email=email,
                    web_url=web_url,
                ),
                personal=listings.get((key, "personal"), {}),
                contributed=listings.get((key, "contributed"), {}),
                refreshed_at=_req_dt(refreshed),
            )
        hidden: dict[str, tuple[UserDetail, datetime]] = {}
        for key, uid, username, name, state, refreshed in conn.execute(
            "SELECT * FROM hidden_users"
        ):
            user = UserDetail(
                id=int(uid), username=username, name=name, state=state, public_email=None,
                profile_hidden=True,
            )
            hidden[key] = (user, _req_dt(refreshed))
        row = conn.execute("SELECT body FROM snapshot WHERE id = 1").fetchone()
        if row is None:
            raise StateError("no snapshot in it")
        snapshot = snapshot_from_json(row[0], config)
        items: dict[str, AuthoredItemStore] = {}
        for kind, full_sync_at, declined_at in conn.execute("SELECT * FROM item_syncs"):
            items[kind] = AuthoredItemStore(
                full_sync_at=_dt(full_sync_at), declined_at=_dt(declined_at)
            )
        for kind, key, synced_at in conn.execute("SELECT * FROM item_users"):
            items[kind].users[key] = UserItems({}, _req_dt(synced_at))
        for kind, key, item_id, project_id, state, created in conn.execute(
            "SELECT * FROM items"
        ):
            items[kind].users[key].items[int(item_id)] = ItemRef(
                id=int(item_id), project_id=int(project_id), state=state,
                created_at=_req_dt(created),
            )
    return SavedState(
        store=store,
        discoveries=discoveries,
        snapshot=snapshot,
        items=items,
        external_host=meta.get("external_host"),
        hidden=hidden,
    )


def load_state(path: Path, config: Config, shard: str = "0/1") -> SavedState | None:
    """The saved state, or ``None`` (after one log line) when it cannot be used."""
    if not path.exists():
        log.info("no state file yet; the first scan is a full scan", path=str(path))
        return None
    try:
        state = _read(path, config, shard)
    except StateError as exc:
        reason = str(exc)
    except (sqlite3.Error, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = f"unreadable ({type(exc).__name__}: {exc})"
    else:
        log.info(
            "state loaded; scans resume incrementally",
            path=str(path),
            projects=len(state.store),
            commits=state.store.commit_count,
            users=len(state.snapshot.users),
        )
        return state
    log.warning("state file ignored; the next scan is a full scan", path=str(path), reason=reason)
    return None
