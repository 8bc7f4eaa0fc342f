"""The scanner against the GitLab simulator: exact numbers, isolation, last good values."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta

import pytest
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.collectors import build_registry
from exporter.config import Config, parse_config
from exporter.logs import configure_logging, register_secret
from exporter.service import ExporterService
from exporter.simulator.model import Commit, Org
from exporter.simulator.server import FaultRule, SimulatorServer
from exporter.simulator.truth import ExpectedUser, expected_activity
from exporter.snapshot import Snapshot
from tests.conftest import TOKEN, config_document, make_config


def truth_for(org: Org, config: Config, usernames: list[str]) -> dict[str, ExpectedUser]:
    return expected_activity(
        org,
        usernames=usernames,
        timezone=config.scan.timezone,
        periods=config.scan.periods,
        lookback_days=config.scan.lookback_days,
        now=org.now,
        extra_emails=config.extra_emails,
    )


async def scan(config: Config, org: Org, registry: CollectorRegistry | None = None,
               service: ExporterService | None = None) -> Snapshot:
    service = service or ExporterService(config, clock=lambda: org.now)
    if registry is not None:
        service.attach_metrics(registry)
    async with service:
        return await service.scan_once()


def numbers(snapshot: Snapshot, user: str) -> tuple[int, dict[str, int], dict[str, int]]:
    stats = snapshot.users[user].stats
    assert stats is not None, f"{user} has no numbers"
    return stats.commits, dict(stats.period_commits), dict(stats.projects)


def expected_numbers(truth: Mapping[str, ExpectedUser], user: str) -> tuple[int, dict[str, int], dict[str, int]]:
    t = truth[user]
    return t.commits, t.period_commits, t.projects


@pytest.mark.parametrize(
    "scan_settings",
    [
        {"timezone": "Asia/Kolkata"},
        {"timezone": "commit"},
        {"timezone": "America/New_York", "periods": {"day": "08:00-20:00", "night": "20:00-08:00"}},
    ],
    ids=["kolkata", "commit-offsets", "new-york-full-day"],
)
async def test_numbers_equal_the_independent_truth(org: Org, sim: SimulatorServer, scan_settings: dict[str, object]) -> None:
    config = make_config(org, sim.url, **scan_settings)
    snapshot = await scan(config, org)
    users = sorted(snapshot.users)
    truth = truth_for(org, config, users)
    assert set(truth) == set(users)
    assert snapshot.last_scan is not None and snapshot.last_scan.users_failed == 0
    for user in users:
        assert numbers(snapshot, user) == expected_numbers(truth, user), user
    # the organisation is not trivial: commits, several periods, shared and forked projects
    assert sum(t.commits for t in truth.values()) > 50
    assert sum(t.projects["active"] for t in truth.values()) > sum(
        1 for t in truth.values() if t.commits
    )


async def test_each_projects_commits_fetched_once_per_scan(org: Org, sim: SimulatorServer) -> None:
    config = make_config(org, sim.url)
    await scan(config, org)
    first_pages: dict[tuple[str, str], int] = {}
    listings: dict[str, int] = {}
    for entry in sim.log.entries:
        if entry.endpoint == "/projects/:id/repository/commits" and "page" not in entry.query:
            key = (entry.path, entry.query.get("ref_name", ""))
            first_pages[key] = first_pages.get(key, 0) + 1
        if entry.endpoint == "/projects/:id/repository/branches" and "page" not in entry.query:
            listings[entry.path] = listings.get(entry.path, 0) + 1
    assert first_pages, "no commit requests were made"
    assert max(first_pages.values()) == 1  # each branch once
    assert max(listings.values()) == 1  # each project's branches once
    # and projects shared by several users exist, so the cache was actually needed
    assert len(listings) < sum(
        len(set(org.contributed.get(u.id, []))) for u in org.users.values()
    )


async def test_team_membership_from_groups_and_lists(org: Org, sim: SimulatorServer) -> None:
    config = make_config(org, sim.url)
    snapshot = await scan(config, org)
    groups = sorted(org.groups.values(), key=lambda g: g.id)[:2]
    for group in groups:
        members = set(snapshot.teams[group.path])
        assert members, f"group {group.full_path} resolved to nobody"
        direct = {org.users[uid].username for uid in group.members if uid in org.users}
        assert direct <= members
    listed = [u.username for u in sorted(org.users.values(), key=lambda u: u.id)[:5]]
    assert list(snapshot.teams["listed"]) == listed


async def test_one_bad_user_leaves_the_others_exact_and_keeps_last_good_values(
    org: Org, sim: SimulatorServer
) -> None:
    config = make_config(org, sim.url)
    registry = build_registry(lambda: snapshot, version=__version__)
    service = ExporterService(config, clock=lambda: org.now)
    service.attach_metrics(registry)
    async with service:
        snapshot = await service.scan_once()
        first = snapshot
        users = sorted(first.users)
        victim = next(u for u in users if first.users[u].stats and first.users[u].stats.commits)
        victim_id = next(u.id for u in org.users.values() if u.username == victim)
        # the victim's project listing now always fails with an HTML 502
        sim.faults.add(FaultRule(path_pattern=rf"^/api/v4/users/{victim_id}/projects$", kind="502_html"))
        snapshot = await service.scan_once()
    second = snapshot
    truth = truth_for(org, config, users)
    state = second.users[victim]
    assert state.last_error == "api_error"
    assert dict(state.failures) == {"api_error": 1}
    assert state.stats == first.users[victim].stats  # last good values, not zero
    assert state.last_success == first.users[victim].last_success
    assert second.last_scan is not None and second.last_scan.users_failed == 1
    for user in users:
        if user != victim:
            assert numbers(second, user) == expected_numbers(truth, user), user
            assert second.users[user].last_error is None
    assert registry.get_sample_value(
        "gitlab_activity_user_scan_failures_total", {"user": victim, "reason": "api_error"}
    ) == 1
    assert registry.get_sample_value("gitlab_activity_user_up", {"user": victim}) == 0
    assert registry.get_sample_value("gitlab_activity_user_commits", {"user": victim}) == first.users[victim].stats.commits  # type: ignore[union-attr]


async def test_missing_user_fails_alone_with_not_found(org: Org, sim: SimulatorServer) -> None:
    document_config = make_config(org, sim.url)
    users = sorted(u.username for u in org.users.values())
    gone = users[3]
    org.delete_user(gone)
    snapshot = await scan(document_config, org)
    assert snapshot.users[gone].last_error == "not_found"
    assert snapshot.users[gone].stats is None
    assert dict(snapshot.users[gone].failures) == {"not_found": 1}
    truth = truth_for(org, document_config, users)
    assert gone not in truth
    for user in users:
        if user != gone:
            assert numbers(snapshot, user) == expected_numbers(truth, user), user


async def test_flaky_gitlab_is_retried_into_exact_numbers(org: Org, sim: SimulatorServer) -> None:
    config = make_config(org, sim.url)
    # transient faults on the busiest endpoint: an HTML 503, a reset, a 429, bad JSON
    for kind in ("503_html", "reset", "429", "malformed_json"):
        sim.faults.add(FaultRule(path_pattern=r"/repository/commits$", kind=kind, times=1))
    snapshot = await scan(config, org)
    truth = truth_for(org, config, sorted(snapshot.users))
    assert snapshot.last_scan is not None and snapshot.last_scan.users_failed == 0
    for user in snapshot.users:
        assert numbers(snapshot, user) == expected_numbers(truth, user), user
    statuses = sim.log.by_endpoint()["/projects/:id/repository/commits"]
    assert statuses.get(503) == 1 and statuses.get(429) == 1


async def test_revoked_token_stops_the_scan_at_its_first_request(
    org: Org, sim: SimulatorServer
) -> None:
    config = make_config(org, sim.url)
    sim.faults.add(FaultRule(path_pattern=r".*", kind="401"))
    snapshot = await scan(config, org)
    assert snapshot.last_scan is None  # no user was scanned, none failed
    assert not snapshot.users
    assert snapshot.last_complete_scan_end is None  # nothing was scanned: no complete scan
    assert len(sim.log) == 1


async def test_token_absent_from_debug_logs(org: Org, sim: SimulatorServer) -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    register_secret(TOKEN)
    try:
        config = make_config(org, sim.url)
        sim.faults.add(FaultRule(path_pattern=r"/repository/commits$", kind="502_html", times=3))
        sim.faults.add(FaultRule(path_pattern=r"^/api/v4/users/\d+/events$", kind="401", times=1))
        await scan(config, org)
    finally:
        configure_logging("info", "console")
    text = stream.getvalue()
    assert "retry" in text.lower()  # debug logging really happened
    assert re.search(r"unauthorized|401", text)
    assert TOKEN not in text
    assert TOKEN[6:] not in text


# --- merge requests, issues and scores (the previous tool's leaderboard) ---------------

# the previous tool's score: commits*1 + merged MRs*5 + all MRs*2 + closed issues*3
TRUTH_WEIGHTS = {"commits": 1, "merged_merge_requests": 5, "merge_requests": 2, "closed_issues": 3}


def truth_score(expected: ExpectedUser, weights: Mapping[str, float]) -> float:
    return (
        weights["commits"] * expected.commits
        + weights["merged_merge_requests"] * expected.merge_requests["merged"]
        + weights["merge_requests"] * sum(expected.merge_requests.values())
        + weights["closed_issues"] * expected.issues["closed"]
    )


@pytest.mark.parametrize(
    "weights",
    [None, {"commits": 0.5, "merged_merge_requests": 0, "merge_requests": 1, "closed_issues": 7}],
    ids=["default-weights", "configured-weights"],
)
async def test_merge_requests_issues_and_scores_equal_the_truth(
    org: Org, sim: SimulatorServer, weights: dict[str, float] | None
) -> None:
    document = config_document(org, sim.url)
    if weights is not None:
        document["score"] = {"weights": weights}
    config = parse_config(document, env={})
    registry = build_registry(lambda: snapshot, version=__version__)
    snapshot = await scan(config, org, registry)
    users = sorted(snapshot.users)
    truth = truth_for(org, config, users)
    assert set(truth) == set(users)
    used = weights or TRUTH_WEIGHTS
    for user in users:
        stats = snapshot.users[user].stats
        assert stats is not None, user
        assert dict(stats.merge_requests) == truth[user].merge_requests, user
        assert dict(stats.issues) == truth[user].issues, user
        for state, count in truth[user].merge_requests.items():
            assert registry.get_sample_value(
                "gitlab_activity_user_merge_requests", {"user": user, "state": state}
            ) == count, (user, state)
        for state, count in truth[user].issues.items():
            assert registry.get_sample_value(
                "gitlab_activity_user_issues", {"user": user, "state": state}
            ) == count, (user, state)
        assert registry.get_sample_value(
            "gitlab_activity_user_score", {"user": user}
        ) == pytest.approx(truth_score(truth[user], used)), user
    # team sums, a user in several teams counting in each
    members_of = {team: list(members) for team, members in snapshot.teams.items()}
    multi = [u for u in users if sum(u in m for m in members_of.values()) > 1]
    assert multi, "the configuration has no user in several teams"
    for team, members in members_of.items():
        assert registry.get_sample_value(
            "gitlab_activity_team_score", {"team": team}
        ) == pytest.approx(sum(truth_score(truth[m], used) for m in members)), team
        assert registry.get_sample_value("gitlab_activity_team_commits", {"team": team}) == sum(
            truth[m].commits for m in members
        ), team
        for period in snapshot.periods:
            assert registry.get_sample_value(
                "gitlab_activity_team_period_commits", {"team": team, "period": period}
            ) == sum(truth[m].period_commits[period] for m in members), (team, period)
        assert registry.get_sample_value(
            "gitlab_activity_team_info", {"team": team, "project": ""}
        ) == 1
    # the organisation is not trivial: every state occurs, and items outside the window
    # and merge requests only assigned to a user exist (the truth leaves them out)
    assert all(sum(t.merge_requests[s] for t in truth.values()) for s in ("opened", "merged", "closed"))
    assert all(sum(t.issues[s] for t in truth.values()) for s in ("opened", "closed"))
    assert any(mr.state == "locked" for mr in org.merge_requests)
    assert any(mr.created_at < org.now - timedelta(days=30) for mr in org.merge_requests)
    assert any(mr.assignee and mr.assignee != mr.author for mr in org.merge_requests)


async def test_merge_request_and_issue_lists_ask_for_the_window_in_every_scope(
    org: Org, sim: SimulatorServer
) -> None:
    config = make_config(org, sim.url)
    await scan(config, org)
    for endpoint in ("/merge_requests", "/issues"):
        first_pages = [
            e.query for e in sim.log.entries if e.endpoint == endpoint and "page" not in e.query
        ]
        # one shared list for all users (tests/test_authored_items.py has the details)
        assert len(first_pages) == 1, endpoint
        for query in first_pages:
            assert query["scope"] == "all"
            assert query["created_after"] == (org.now - timedelta(days=30)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )


async def test_failing_merge_request_list_fails_the_user_and_keeps_last_good_values(
    org: Org, sim: SimulatorServer
) -> None:
    config = make_config(org, sim.url)
    service = ExporterService(config, clock=lambda: org.now)
    async with service:
        first = await service.scan_once()
        sim.faults.add(FaultRule(path_pattern=r"^/api/v4/merge_requests$", kind="404"))
        second = await service.scan_once()
    assert second.last_scan is not None
    assert second.last_scan.users_failed == second.last_scan.users_total > 0
    for user, state in second.users.items():
        assert state.last_error == "not_found", user
        assert state.stats == first.users[user].stats, user  # last good values, not zero


async def test_service_renders_the_new_snapshots_metrics_right_after_the_scan(
    org: Org, sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.exposition import choose_encoder

    from tests.test_exposition import count_renders

    service = ExporterService(make_config(org, sim.url), clock=lambda: org.now)
    registry = build_registry(lambda: service.snapshot, version=__version__)
    service.attach_metrics(registry, warm=True)
    renders = count_renders(monkeypatch)
    async with service:
        await service.scan_once()
        assert len(renders) == 1  # the plain text format, rendered after the scan
        body = await registry.render(*choose_encoder(""))
        assert len(renders) == 1  # the scrape found it rendered
        assert body == generate_latest(registry)
        assert b"gitlab_activity_user_commits{" in body


async def test_only_pushes_within_the_window_bring_a_project_in(org: Org, sim: SimulatorServer) -> None:
    """Push events are asked for from the day before the window starts (GitLab's ``after``
    takes a date): a push on the window's first day but before its start does not make
    the project one of the user's, so the user's commits there do not count."""
    # a window that starts after 01:00 UTC, whatever the time now: room on its first day
    lookback = 30.0
    if (org.now - timedelta(days=lookback)).astimezone(UTC).time() < time(1):
        lookback = 30.5
    config = make_config(org, sim.url, lookback_days=lookback)
    start = org.now - timedelta(days=config.scan.lookback_days)
    assert start.astimezone(UTC).time() >= time(1)
    user = sorted(org.users.values(), key=lambda u: u.id)[0]
    own = set(org.personal_project_ids(user.id)) | set(org.contributed.get(user.id, []))
    pushed = {e.project_id for e in org.events.get(user.id, []) if e.action == "pushed"}
    pid = next(p for p in sorted(org.projects) if p not in own | pushed)
    name, email = sorted(user.commit_identities)[0]
    inside = org.now - timedelta(days=1)
    org.add_commits(pid, [Commit(sha="e" * 40, title="Work", message="Work", author_name=name,
                                 author_email=email, authored_date=inside,
                                 committed_date=inside)])
    early = datetime.combine(start.astimezone(UTC).date(), time(0, 30), UTC)
    push = org.add_push(user.id, pid, early, "e" * 40)
    snapshot = await scan(config, org)
    truth = truth_for(org, config, sorted(snapshot.users))
    assert numbers(snapshot, user.username) == expected_numbers(truth, user.username)
    # the same push inside the window brings the project and its commit in
    org.events[user.id].remove(push)
    org.add_push(user.id, pid, start + timedelta(hours=1), "e" * 40)
    again = await scan(config, org)
    truth = truth_for(org, config, sorted(again.users))
    assert numbers(again, user.username) == expected_numbers(truth, user.username)
    assert again.users[user.username].stats.commits == snapshot.users[user.username].stats.commits + 1
