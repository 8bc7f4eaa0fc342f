"""The simulator answers a token that is not an admin's as GitLab does: private profiles,
blocked users, repositories it may not read, projects without one; GitLab's external
host in web_urls; renamed users and shared names in the generated organisation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from exporter.simulator.generate import Realism, generate_org
from exporter.simulator.model import Org
from exporter.simulator.server import SimulatorServer
from tests.conftest import HOST, TOKEN

EXTERNAL = "gitlab.example.com"
REALISM = Realism(
    private_profiles=1, blocked_users=1, renamed_users=1, shared_names=1,
    forbidden_projects=1, repositoryless_projects=1, broken_projects=1,
)


@pytest.fixture
def org() -> Org:
    return generate_org(11, users=20, projects=60, host=EXTERNAL, realism=REALISM)


@pytest.fixture(params=[False, True], ids=["guest", "admin"])
async def sim(request: pytest.FixtureRequest, org: Org) -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(org, token=TOKEN, host=HOST, port=0, admin=request.param) as s:
        yield s


async def get(sim: SimulatorServer, path: str, **query: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(
        f"{sim.url}/api/v4{path}", params=query, headers={"PRIVATE-TOKEN": TOKEN}
    ) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def test_private_profiles_and_blocked_users(sim: SimulatorServer) -> None:
    admin = sim.simulator.admin
    private = next(u for u in sim.org.users.values() if u.private_profile)
    blocked = next(u for u in sim.org.users.values() if u.state == "blocked")
    status, found = await get(sim, "/users", username=blocked.username)
    assert status == 200 and len(found) == (1 if admin else 0)
    status, detail = await get(sim, f"/users/{private.id}")
    assert status == 200 and detail["username"] == private.username
    assert ("created_at" in detail, "public_email" in detail) == (admin, admin)
    for path in ("events", "projects", "contributed_projects"):
        status, listed = await get(sim, f"/users/{private.id}/{path}")
        assert status == 200  # hidden lists are [] with 200, not an error
        if not admin:
            assert listed == []
    assert any([(await get(sim, f"/users/{private.id}/{p}"))[1]
                for p in ("events", "projects", "contributed_projects")]) == admin
    status, me = await get(sim, "/user")
    assert me["is_admin"] is admin


async def test_repositories_forbidden_missing_and_broken(sim: SimulatorServer) -> None:
    admin = sim.simulator.admin
    org = sim.org
    forbidden = next(p for p in org.projects.values() if p.code_forbidden)
    missing = next(p for p in org.projects.values() if p.no_repository)
    broken = next(p for p in org.projects.values() if p.broken)
    status, body = await get(sim, f"/projects/{forbidden.id}/repository/commits", all="true")
    if admin:
        assert status == 200 and body
    else:
        assert (status, body) == (403, {"message": "403 Forbidden"})
    status, project = await get(sim, f"/projects/{forbidden.id}")
    assert status == 200 and project["id"] == forbidden.id  # the project itself is visible
    status, body = await get(sim, f"/projects/{missing.id}/repository/commits")
    assert (status, body) == (404, {"message": "404 Repository Not Found"})
    status, body = await get(sim, f"/projects/{broken.id}/repository/commits")
    assert status == 500 and "<html>" in body
    # pushes need download_code: a guest does not see pushes to the forbidden project
    pushers = [uid for uid, evs in org.events.items()
               if any(e.project_id == forbidden.id and not e.hidden for e in evs)]
    assert pushers
    for uid in pushers:
        if org.users[uid].profile_hidden:
            continue
        status, events = await get(sim, f"/users/{uid}/events", action="pushed", per_page="100")
        shown = [e for e in events if e["project_id"] == forbidden.id]
        assert bool(shown) == admin


async def test_web_urls_name_the_external_host_not_the_listening_one(
    sim: SimulatorServer,
) -> None:
    user = next(iter(sim.org.users.values()))
    _, found = await get(sim, "/users", username=user.username)
    assert found[0]["web_url"] == f"https://{EXTERNAL}/{user.username}"
    _, projects = await get(sim, "/projects/" + str(next(iter(sim.org.projects))))
    assert projects["web_url"].startswith(f"https://{EXTERNAL}/")
    assert HOST not in projects["web_url"]


def test_renamed_users_and_shared_names(org: Org) -> None:
    renamed = next(u for u in org.users.values() if u.previous_usernames)
    old = renamed.previous_usernames[0]
    assert org.user_by_username(old) is None and org.user_by_username(renamed.username)
    # the older commits keep the old name in the no-reply email
    emails = {c.author_email for cs in org.commits.values() for c in cs}
    assert f"{renamed.id}-{old}@users.noreply.{EXTERNAL}" in emails
    # the personal namespace moved with the user
    assert all(p.namespace.path != old for p in org.projects.values())
    names = [u.name for u in org.users.values()]
    assert len(names) - len(set(names)) == 1


def test_realism_leaves_the_plain_organisation_alone() -> None:
    plain = generate_org(11, users=20, projects=60, host=EXTERNAL)
    again = generate_org(11, users=20, projects=60, host=EXTERNAL, realism=Realism())
    assert {u.username for u in plain.users.values()} == {
        u.username for u in again.users.values()
    }
    assert sorted(plain.projects) == sorted(again.projects)
