"""The built-in demo: people working their own local hours, counted so that the split
by period means something, and a couple of users failing on purpose."""

from __future__ import annotations

from exporter.demo import DEMO_PERIODS, MISSING_USER, run_demo
from exporter.service import ExporterService
from exporter.simulator.generate import generate_org


async def test_demo_counts_local_working_hours_and_shows_failures() -> None:
    async with run_demo() as config, ExporterService(config) as service:
        snapshot = await service.scan_once()
    periods: dict[str, int] = {}
    for user in snapshot.users.values():
        if user.stats is not None:
            for name, count in user.stats.period_commits.items():
                periods[name] = periods.get(name, 0) + count
    total = sum(periods.values())
    assert total > 500
    # every commit falls in a named period (no "other"), and most in the working day
    assert set(periods) == set(DEMO_PERIODS)
    assert (periods["morning"] + periods["afternoon"]) / total > 0.55
    assert periods["night"] / total < 0.2
    failed = {name: u.last_error for name, u in snapshot.users.items() if u.last_error}
    # the listed person the GitLab does not have, and what a non-admin token meets
    assert failed[MISSING_USER] == "not_found"
    assert "private_profile" in failed.values()
    assert all(u.stats is None for n, u in snapshot.users.items() if n in failed)


def weekend_share(working_week: bool) -> tuple[float, int]:
    org = generate_org(3, users=20, projects=60, working_week=working_week)
    commits = [c for cs in org.commits.values() for c in cs]
    # each commit in its author's own offset: the local day the author wrote it
    weekend = sum(1 for c in commits if c.authored_date.weekday() >= 5)
    return weekend / len(commits), len(commits)


def test_working_week_moves_working_hours_off_weekends() -> None:
    everyday, count = weekend_share(False)
    weekdays, same_count = weekend_share(True)
    assert everyday > 0.2  # about 2 days in 7
    assert weekdays < 0.15  # only the commits outside working hours are left there
    assert same_count == count  # the same commits, at other times
