"""The fixed set of reasons a user's scan can fail with.

Shared by the GitLab client (``GitLabError.reason``), the scanner and the collectors,
which initialise ``gitlab_activity_user_scan_failures_total`` at 0 for every reason.
"""

from __future__ import annotations

from typing import Final

FAILURE_REASONS: Final[tuple[str, ...]] = (
    "not_found",
    "unauthorized",
    "rate_limited",
    "api_error",
    "timeout",
    "crash",
)
