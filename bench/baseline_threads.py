"""The previous tool's approach, as the benchmark's baseline.

python-gitlab, a thread pool over users and, per user, a thread pool over projects. Every
user lists their merge requests and issues (as the exporter does) and their projects
(personal, contributed, pushed to), and fetches all commits of each (``all=true``, every
branch, the whole history unless ``--since``; no author filter), keeping those authored
in the window and matching authors locally. Users sharing a project each fetch it again.
Author matching follows the exporter's rules (emails incl. GitLab's no-reply forms,
display name or username), so both must agree.

Run by ``bench/run.py`` in its own process; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import gitlab
from rss import peak_rss_mb

PER_PAGE = {"per_page": 100}
"""Asked on every listing: python-gitlab's ``per_page`` applies to its managers' ``list``
only, not to ``http_list``, where GitLab's default of 20 would apply."""


def _norm(value: str) -> str:
    return value.strip().casefold()


def scan_user(
    gl: gitlab.Gitlab, username: str, extra: list[str], start: datetime, end: datetime,
    host: str, project_workers: int, use_since: bool,
) -> int:
    found = gl.users.list(username=username)
    if not found:
        raise LookupError(username)
    user = gl.users.get(found[0].id)
    personal = gl.http_list(f"/users/{user.id}/projects", query_data=PER_PAGE, get_all=True)
    contributed = gl.http_list(
        f"/users/{user.id}/contributed_projects", query_data=PER_PAGE, get_all=True
    )
    after = (start.date() - timedelta(days=1)).isoformat()
    events = gl.http_list(
        f"/users/{user.id}/events", query_data={"action": "pushed", "after": after, **PER_PAGE},
        get_all=True,
    )
    # the previous tool also counted the user's merge requests and issues
    for kind in ("merge_requests", "issues"):
        gl.http_list(f"/{kind}", query_data={
            "scope": "all", "author_username": user.username,
            "created_after": start.isoformat(), **PER_PAGE}, get_all=True)
    project_ids = {p["id"] for p in personal} | {p["id"] for p in contributed}
    project_ids |= {e["project_id"] for e in events}

    emails = {_norm(e) for e in extra}
    emails |= {_norm(f"{user.id}-{user.username}@users.noreply.{host}"),
               _norm(f"{user.username}@users.noreply.{host}")}
    if getattr(user, "public_email", None):
        emails.add(_norm(user.public_email))
    names = {_norm(user.name), _norm(user.username)}

    def commits_of(project_id: int) -> list[dict[str, Any]]:
        try:
            return list(gl.http_list(
                f"/projects/{project_id}/repository/commits",
                query_data={"all": "true", **PER_PAGE,
                            **({"since": start.isoformat()} if use_since else {})},
                get_all=True,
            ))
        except gitlab.exceptions.GitlabHttpError as exc:
            if exc.response_code == 404:
                return []
            raise

    with ThreadPoolExecutor(max_workers=project_workers) as pool:
        per_project = list(pool.map(commits_of, sorted(project_ids)))
    shas: set[str] = set()
    for commits in per_project:
        for c in commits:
            authored = datetime.fromisoformat(c["authored_date"].replace("Z", "+00:00"))
            if not (start <= authored < end):
                continue
            if _norm(c["author_email"]) in emails or _norm(c["author_name"]) in names:
                shas.add(c["id"])
    return len(shas)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--users", required=True, help="JSON file: {username: [extra emails]}")
    parser.add_argument("--now", required=True)
    parser.add_argument("--lookback-days", type=float, default=30)
    parser.add_argument("--host", required=True)
    parser.add_argument("--user-workers", type=int, default=16)
    parser.add_argument("--project-workers", type=int, default=8)
    parser.add_argument("--since", action="store_true",
                        help="ask only for the window (the previous tool read all history)")
    args = parser.parse_args()
    with open(args.users, encoding="utf-8") as handle:
        users: dict[str, list[str]] = json.load(handle)
    end = datetime.fromisoformat(args.now)
    start = end - timedelta(days=args.lookback_days)
    # keep_base_url: GitLab builds its page links from its external URL, which need not be
    # the one the client was given (python-gitlab's own answer to that)
    gl = gitlab.Gitlab(args.url, private_token=args.token, per_page=100,
                       retry_transient_errors=True, keep_base_url=True)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.user_workers) as pool:
        futures = {
            name: pool.submit(scan_user, gl, name, extra, start, end, args.host,
                              args.project_workers, args.since)
            for name, extra in users.items()
        }
    commits: dict[str, int] = {}
    failed: dict[str, str] = {}
    for name, future in futures.items():
        try:
            commits[name] = future.result()
        except Exception as exc:  # the old tool's "Error" status
            failed[name] = f"{type(exc).__name__}: {exc}"[:200]
    print(json.dumps({
        "wall_seconds": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
        "commits": commits,
        "failed": failed,
    }))


if __name__ == "__main__":
    main()
