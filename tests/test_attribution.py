"""One user's numbers from project commits: window, SHA dedupe across forks, periods, kinds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from exporter.attribution import ProjectSets, Window, attribute, distinct
from exporter.author_index import AuthorIndex
from exporter.matching import Identity
from exporter.periods import build_period_table, resolve_zone

NOW = datetime(2024, 6, 30, 12, 0, tzinfo=UTC)
WINDOW = Window(start=NOW - timedelta(days=30), end=NOW)
TABLE = build_period_table({"morning": "09:00-12:30", "afternoon": "12:30-17:00"})
ME = Identity.build(user_id=7, username="dev", display_name="Dev One", host="gl.example")


class C(NamedTuple):
    sha: str
    author_name: str
    author_email: str
    authored_date: datetime


def mine(sha: str, when: datetime) -> C:
    return C(sha, "Dev One", "dev@users.noreply.gl.example", when)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 6, day, hour, minute, tzinfo=UTC)


Numbers = tuple[int, dict[str, int], dict[str, int]]


def run(projects: ProjectSets, commits: dict[int, list[C]]) -> Numbers:
    indexes = {pid: AuthorIndex.build([tuple(c) for c in cs]) for pid, cs in commits.items()}
    stats = attribute(ME, projects, indexes, window=WINDOW, zone=resolve_zone("UTC"), table=TABLE)
    return stats.commits, dict(stats.period_commits), dict(stats.projects)


def test_fork_sharing_a_sha_counts_it_once_but_both_projects_are_active() -> None:
    projects = ProjectSets(personal=frozenset({1}), contributed=frozenset({2}), pushed=frozenset())
    shared = mine("aaa", at(10, 10))
    commits = {1: [shared, mine("bbb", at(11, 13))], 2: [shared]}
    total, periods, kinds = run(projects, commits)
    assert total == 2
    assert periods == {"morning": 1, "afternoon": 1, "other": 0}
    assert kinds == {"personal": 1, "contributed": 1, "active": 2}


def test_window_is_half_open_on_authored_date() -> None:
    projects = ProjectSets(personal=frozenset({1}), contributed=frozenset(), pushed=frozenset())
    commits = {
        1: [
            mine("start", WINDOW.start),  # inside: start is included
            mine("before", WINDOW.start - timedelta(microseconds=1)),
            mine("end", NOW),  # outside: end is excluded
            mine("late", NOW - timedelta(seconds=1)),
        ]
    }
    total, _, _ = run(projects, commits)
    assert total == 2


def test_other_authors_and_projects_outside_the_users_set_are_ignored() -> None:
    projects = ProjectSets(personal=frozenset(), contributed=frozenset({1}), pushed=frozenset({3}))
    commits = {
        1: [C("x", "Someone", "someone@example.com", at(10, 10)), mine("y", at(10, 18))],
        2: [mine("not-looked-at", at(10, 10))],
        3: [mine("pushed", at(12, 9))],
    }
    total, periods, kinds = run(projects, commits)
    assert total == 2
    assert periods == {"morning": 1, "afternoon": 0, "other": 1}
    assert kinds == {"personal": 0, "contributed": 1, "active": 2}


def test_contributed_excludes_personal_projects() -> None:
    projects = ProjectSets(
        personal=frozenset({1, 2}), contributed=frozenset({2, 3}), pushed=frozenset()
    )
    _, _, kinds = run(projects, {})
    assert kinds == {"personal": 2, "contributed": 1, "active": 0}


def test_distinct_is_case_insensitive_and_keeps_order() -> None:
    assert distinct(["Bob", "alice", "bob", "ALICE", "carol"]) == ("Bob", "alice", "carol")


def test_a_numbered_email_of_another_id_is_not_the_users() -> None:
    """The index narrows the search; the identity still decides."""
    projects = ProjectSets(personal=frozenset({1}), contributed=frozenset(), pushed=frozenset())
    commits = {1: [C("x", "x", "8-dev@users.noreply.gl.example", at(10, 10)),
                   C("y", "x", "7-dev@users.noreply.gl.example", at(10, 10))]}
    total, _, _ = run(projects, commits)
    assert total == 1
