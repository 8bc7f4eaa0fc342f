"""Configuration: YAML (and the previous tool's teams JSON) into a validated, frozen ``Config``.

Every problem becomes a :class:`ConfigError` whose message is one line naming the key.
Defaults are documented in the README's configuration section.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from exporter.gitlab.pacing import GITLAB_COM_ENDPOINT_LIMITS
from exporter.periods import PeriodTable, build_period_table, resolve_zone
from exporter.score import DEFAULT_WEIGHTS, ScoreWeights

TOKEN_ENV = "GITLAB_TOKEN"
GITLAB_COM_HOST = "gitlab.com"

DEFAULT_PERIODS: dict[str, str] = {
    "night": "00:00-06:00",
    "morning": "06:00-12:00",
    "afternoon": "12:00-18:00",
    "evening": "18:00-24:00",
}


class ConfigError(Exception):
    """A configuration problem; ``str()`` is one line that names the key."""


class _Strict(BaseModel):
    # .inf and .nan are valid YAML numbers, and no setting of ours works with them
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)


DAY = 86400.0


class EndpointLimit(_Strict):
    requests: int = Field(ge=1)
    period_seconds: float = Field(gt=0, le=DAY)


_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


class GitLabSettings(_Strict):
    url: str
    # GitLab's commit_email_hostname (admin setting); None: learned from GitLab's web_urls
    commit_email_hostname: str | None = None
    token: SecretStr | None = None
    token_file: Path | None = None
    # below one request per 100 s nothing finishes; above, there is no pacing to speak of
    requests_per_second: float = Field(default=10.0, ge=0.01, le=100_000)
    max_concurrency: int = Field(default=16, ge=1, le=256)
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    max_retries: int = Field(default=6, ge=0, le=20)
    max_response_bytes: int = Field(default=50 * 2**20, ge=1024)
    # response bytes read or parsed at once by the whole process (one body may go over)
    max_bytes_in_flight: int = Field(default=64 * 2**20, ge=1024)
    tls_verify: bool = True
    ca_file: Path | None = None  # PEM CA bundle trusted besides the system's (internal CA)
    # "gitlab.com" (its published limits), "none", or {route template or "all": limit};
    # absent: gitlab.com's limits when gitlab.url is on gitlab.com, else none
    endpoint_limits: Literal["gitlab.com", "none"] | dict[str, EndpointLimit] | None = None

    @field_validator("endpoint_limits")
    @classmethod
    def _check_limits(
        cls, value: Literal["gitlab.com", "none"] | dict[str, EndpointLimit] | None
    ) -> Literal["gitlab.com", "none"] | dict[str, EndpointLimit] | None:
        if isinstance(value, dict):
            for key in value:
                if key != "all" and not key.startswith("/"):
                    raise ValueError(f"{key!r} is neither 'all' nor a route like /users/:id")
        return value

    @property
    def rate_limits(self) -> dict[str, tuple[int, float]]:
        """``endpoint_limits`` as (requests, period) per route template (``all``: token)."""
        if self.endpoint_limits == "gitlab.com" or (
            self.endpoint_limits is None and self.host == GITLAB_COM_HOST
        ):
            return dict(GITLAB_COM_ENDPOINT_LIMITS)
        if self.endpoint_limits is None or self.endpoint_limits == "none":
            return {}
        return {k: (v.requests, v.period_seconds) for k, v in self.endpoint_limits.items()}

    @field_validator("commit_email_hostname")
    @classmethod
    def _check_hostname(cls, value: str | None) -> str | None:
        if value is None:
            return None
        hostname = value.strip().casefold()
        if not _HOSTNAME.match(hostname):
            raise ValueError(
                f"{value!r} is not a host name (e.g. users.noreply.gitlab.example.com)"
            )
        return hostname

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        return value.rstrip("/")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""


class ScanSettings(_Strict):
    interval_seconds: float = Field(default=300.0, gt=0, le=7 * DAY)
    lookback_days: float = Field(default=30.0, gt=0, le=3650)
    timezone: str = "UTC"
    periods: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PERIODS))
    discovery_interval_seconds: float = Field(default=3600.0, ge=0, le=365 * DAY)
    #: how often each active project's window is read again in full (default: as often
    #: as users' projects are rediscovered)
    reconcile_interval_seconds: float | None = Field(default=None, ge=0, le=365 * DAY)
    overlap_seconds: float = Field(default=3600.0, ge=0, le=365 * DAY)
    #: count merge commits (two or more parents); GitLab's contributor analytics does not
    count_merge_commits: bool = False
    state_file: Path | None = None

    @property
    def reconcile_interval(self) -> float:
        if self.reconcile_interval_seconds is None:
            return self.discovery_interval_seconds
        return self.reconcile_interval_seconds

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        resolve_zone(value)
        return value

    @field_validator("periods")
    @classmethod
    def _check_periods(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("needs at least one period")
        build_period_table(value)
        return value


class WeightSettings(_Strict):
    """Points per unit; defaults reproduce the previous tool's leaderboard score."""

    commits: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    merged_merge_requests: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    merge_requests: float = Field(default=2.0, ge=0, allow_inf_nan=False)
    closed_issues: float = Field(default=3.0, ge=0, allow_inf_nan=False)


class ScoreSettings(_Strict):
    weights: WeightSettings = Field(default_factory=WeightSettings)

    def to_weights(self) -> ScoreWeights:
        w = self.weights
        return ScoreWeights(
            commits=w.commits,
            merged_merge_requests=w.merged_merge_requests,
            merge_requests=w.merge_requests,
            closed_issues=w.closed_issues,
        )


class TeamSettings(_Strict):
    name: str = Field(min_length=1)
    members: list[str] = Field(default_factory=list)
    group: str | None = None
    project: str | None = None

    @model_validator(mode="after")
    def _has_people(self) -> TeamSettings:
        if not self.members and not self.group:
            raise ValueError(f"team {self.name!r} needs members, a group, or both")
        return self


class UserSettings(_Strict):
    username: str = Field(min_length=1)
    emails: list[str] = Field(default_factory=list)


class FileSettings(_Strict):
    gitlab: GitLabSettings
    scan: ScanSettings = Field(default_factory=ScanSettings)
    score: ScoreSettings = Field(default_factory=ScoreSettings)
    teams: list[TeamSettings] = Field(default_factory=list)
    teams_file: Path | None = None
    users: list[UserSettings] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Team:
    name: str
    members: tuple[str, ...]
    group: str | None = None
    project: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """The validated configuration the rest of the exporter works from."""

    gitlab: GitLabSettings
    scan: ScanSettings
    token: str
    teams: tuple[Team, ...]
    extra_emails: Mapping[str, tuple[str, ...]]  # lower-cased username -> emails
    standalone_users: tuple[str, ...]  # from `users:`, scanned even without a team
    period_table: PeriodTable
    score_weights: ScoreWeights = DEFAULT_WEIGHTS
    state_file: Path | None = None  # scan.state_file, resolved against the config file
    ca_file: Path | None = None  # gitlab.ca_file, resolved against the config file

    @property
    def static_usernames(self) -> tuple[str, ...]:
        """Usernames known without asking GitLab (group members come at scan time)."""
        seen: dict[str, str] = {}
        for team in self.teams:
            for member in team.members:
                seen.setdefault(member.casefold(), member)
        for user in self.standalone_users:
            seen.setdefault(user.casefold(), user)
        return tuple(seen.values())


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` to a mistyped ``word``,
    or ``""`` when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _model_of(annotation: Any) -> Any:
    """The model, list or dict type inside ``annotation`` (``X | None`` unwrapped)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, dict):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _keys_at(location: Sequence[int | str]) -> tuple[str, ...]:
    """The keys the configuration allows where ``location`` (key path) points."""
    current: Any = FileSettings
    for part in location:
        current = _model_of(current)
        if current is None:
            return ()
        if get_origin(current) in (list, dict):
            current = get_args(current)[-1]  # ``part`` is an index or a map key
        elif isinstance(part, str) and part in current.model_fields:
            current = current.model_fields[part].annotation
        else:
            return ()
    model = _model_of(current)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return tuple(model.model_fields)
    return ()


def _format_validation_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        *parent, key = error["loc"]
        return f"{location}: unknown key" + did_you_mean(str(key), _keys_at(parent))
    if kind == "missing":
        return f"{location}: required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    return f"{location}: {message}"


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what}: {str(path)!r} is not UTF-8 text") from None


def load_teams_file(path: Path) -> list[Team]:
    """Read the previous tool's teams JSON, reporting problems by team and member number."""
    text = _read_text(path, "teams_file")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"teams_file: {str(path)!r} is not valid JSON (line {exc.lineno}: {exc.msg})"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("teams"), list):
        raise ConfigError('teams_file: expected an object with a "teams" list')
    teams: list[Team] = []
    for t_index, raw in enumerate(document["teams"], start=1):
        where = f"teams_file: team {t_index}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected an object")
        name = raw.get("team_name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: team_name is missing or empty")
        where = f"{where} ({name!r})"
        project = raw.get("project_name")
        if project is not None and not isinstance(project, str):
            raise ConfigError(f"{where}: project_name must be a string")
        members = raw.get("members")
        if not isinstance(members, list):
            raise ConfigError(f"{where}: members must be a list")
        usernames: list[str] = []
        for m_index, member in enumerate(members, start=1):
            m_where = f"{where}, member {m_index}"
            if not isinstance(member, dict):
                raise ConfigError(f"{m_where}: expected an object")
            username = member.get("username")
            if not isinstance(username, str) or not username.strip():
                raise ConfigError(f"{m_where}: username is missing or empty")
            member_name = member.get("name")
            if member_name is not None and not isinstance(member_name, str):
                raise ConfigError(f"{m_where}: name must be a string")
            user_id = member.get("user_id")
            if user_id is not None and (isinstance(user_id, bool) or not isinstance(user_id, int)):
                raise ConfigError(f"{m_where}: user_id must be an integer")
            usernames.append(username.strip())
        teams.append(Team(name=name.strip(), members=tuple(usernames), project=project))
    return teams


def _clean_token(raw: str, key: str) -> str:
    """``raw`` without a byte-order mark (editors on Windows write one) and surrounding
    whitespace; a token with whitespace, control or non-ASCII characters inside cannot
    be sent in a header and is refused here, naming ``key``."""
    token = raw.replace("\ufeff", "").strip()
    if not token:
        raise ConfigError(f"{key}: is empty")
    if not all("!" <= char <= "~" for char in token):
        raise ConfigError(f"{key}: the token contains whitespace, control or non-ASCII characters")
    return token


def _resolve_token(settings: GitLabSettings, env: Mapping[str, str], base: Path) -> str:
    from_env = env.get(TOKEN_ENV, "").replace("\ufeff", "").strip()
    if from_env:
        return _clean_token(from_env, TOKEN_ENV)
    if settings.token is not None and settings.token_file is not None:
        raise ConfigError("gitlab.token: set either token or token_file, not both")
    if settings.token is not None:
        return _clean_token(settings.token.get_secret_value(), "gitlab.token")
    if settings.token_file is not None:
        text = _read_text(base / settings.token_file, "gitlab.token_file")
        if not text.replace("\ufeff", "").strip():
            raise ConfigError("gitlab.token_file: the file is empty")
        return _clean_token(text, "gitlab.token_file")
    raise ConfigError(
        f"gitlab.token: no token; set {TOKEN_ENV}, gitlab.token or gitlab.token_file"
    )


def parse_config(
    document: Any, *, env: Mapping[str, str] | None = None, base: Path = Path(".")
) -> Config:
    """Validate a parsed YAML document. Relative files resolve against ``base``."""
    if not isinstance(document, dict):
        raise ConfigError("(top level): expected a mapping of keys")
    try:
        settings = FileSettings.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
    token = _resolve_token(settings.gitlab, os.environ if env is None else env, base)

    teams = [
        Team(name=t.name, members=tuple(t.members), group=t.group, project=t.project)
        for t in settings.teams
    ]
    if settings.teams_file is not None:
        teams.extend(load_teams_file(base / settings.teams_file))
    names = [t.name for t in teams]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"teams: team {duplicates[0]!r} is defined more than once")

    extra: dict[str, tuple[str, ...]] = {}
    for index, user in enumerate(settings.users):
        key = user.username.casefold()
        if key in extra:
            raise ConfigError(f"users.{index}.username: {user.username!r} is listed twice")
        extra[key] = tuple(e.strip() for e in user.emails if e.strip())

    if not teams and not settings.users:
        raise ConfigError("teams: nobody to scan; configure teams, teams_file or users")

    return Config(
        gitlab=settings.gitlab,
        scan=settings.scan,
        token=token,
        teams=tuple(teams),
        extra_emails=extra,
        standalone_users=tuple(u.username for u in settings.users),
        period_table=build_period_table(settings.scan.periods),
        score_weights=settings.score.to_weights(),
        state_file=base / settings.scan.state_file if settings.scan.state_file else None,
        ca_file=_ca_file(settings.gitlab, base),
    )


def _ca_file(settings: GitLabSettings, base: Path) -> Path | None:
    """``gitlab.ca_file`` resolved, checked to hold at least one PEM certificate."""
    if settings.ca_file is None:
        return None
    path = base / settings.ca_file
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(path))
    except (ssl.SSLError, ValueError):  # SSLError first: it is an OSError too
        raise ConfigError(f"gitlab.ca_file: {str(path)!r} holds no PEM certificate") from None
    except OSError as exc:
        raise ConfigError(
            f"gitlab.ca_file: cannot read {str(path)!r}: {exc.strerror or exc}"
        ) from None
    return path


def load_config(path: Path | str, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the YAML file at ``path``."""
    path = Path(path)
    text = _read_text(path, "config.file")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(
            f"config.file: {str(path)!r} is not valid YAML{where}: {problem}"
        ) from None
    return parse_config(document, env=env, base=path.parent)



RELOADABLE = ("teams", "teams_file", "users", "score.weights", "scan.periods")
"""What ``serve`` takes from a new configuration on SIGHUP; the rest waits for a restart."""


def reloaded(running: Config, new: Config) -> tuple[Config, tuple[str, ...]]:
    """``running`` with the :data:`RELOADABLE` parts taken from ``new``, and the keys
    that differ in ``new`` but only take effect after a restart (the GitLab connection,
    the token, the scan's schedule, window, zone and state file)."""
    waiting = [
        f"gitlab.{name}"
        for name in GitLabSettings.model_fields
        if name not in ("token", "token_file")
        and getattr(running.gitlab, name) != getattr(new.gitlab, name)
    ]
    if running.token != new.token:
        waiting.append("gitlab.token")
    waiting += [
        f"scan.{name}"
        for name in ScanSettings.model_fields
        if name not in ("periods", "state_file")
        and getattr(running.scan, name) != getattr(new.scan, name)
    ]
    if running.state_file != new.state_file:
        waiting.append("scan.state_file")
    merged = dataclasses.replace(
        running,
        scan=running.scan.model_copy(update={"periods": dict(new.scan.periods)}),
        teams=new.teams,
        extra_emails=new.extra_emails,
        standalone_users=new.standalone_users,
        period_table=new.period_table,
        score_weights=new.score_weights,
    )
    return merged, tuple(waiting)
