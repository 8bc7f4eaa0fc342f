"""Typed GitLab failures.

Every failure the client or the API layer raises is a :class:`GitLabError` whose
``reason`` is one of :data:`FAILURE_REASONS`, so callers can count failures by a short
fixed label. ``str(error)`` is one line naming the endpoint, the HTTP status when there
was one, and a short cause; it never contains the token.
"""

from __future__ import annotations

from exporter.text import valid_text

FAILURE_REASONS = (
    "not_found",
    "unauthorized",
    "private_profile",
    "rate_limited",
    "api_error",
    "timeout",
    "crash",
)


class GitLabError(Exception):
    """Base class of every GitLab failure.

    ``reason`` is one of :data:`FAILURE_REASONS`, ``status`` the HTTP status of the last
    response (``None`` when there was none, e.g. a timeout), ``endpoint`` the route
    template used as a metric label (e.g. ``/users/:id/projects``).
    """

    reason: str = "api_error"

    def __init__(self, detail: str, *, endpoint: str, status: int | None = None) -> None:
        self.detail = " ".join(valid_text(detail).split())  # one line of valid text
        self.endpoint = endpoint
        self.status = status
        super().__init__(self._render())

    def _render(self) -> str:
        if self.status is None:
            return f"GitLab {self.endpoint}: {self.detail}"
        return f"GitLab {self.endpoint}: HTTP {self.status} ({self.detail})"

    def __str__(self) -> str:
        return self._render()

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.detail, self.endpoint, self.status))


def _rebuild(
    cls: type[GitLabError], detail: str, endpoint: str, status: int | None
) -> GitLabError:
    return cls(detail, endpoint=endpoint, status=status)


class NotFoundError(GitLabError):
    """404: the object does not exist or is not visible to the token."""

    reason = "not_found"


class UnauthorizedError(GitLabError):
    """401 or 403: the token was rejected or lacks the scope."""

    reason = "unauthorized"


class PrivateProfileError(GitLabError):
    """The token cannot see the user's activity: GitLab answers ``/users/:id`` without
    the profile fields and ``[]`` (with 200) for the user's events and project lists,
    which must not be taken for no activity."""

    reason = "private_profile"


class RateLimitedError(GitLabError):
    """429 answered on every attempt until the retries ran out."""

    reason = "rate_limited"


class ApiError(GitLabError):
    """5xx after retries, other 4xx, unusable bodies, wrong shapes, refused redirects."""

    reason = "api_error"


class RequestTimeoutError(GitLabError):
    """Timeouts and connection failures after the retries ran out."""

    reason = "timeout"


class PageBudgetExceeded(Exception):
    """A paged list is longer than the caller wanted to read (not a GitLab failure).

    ``total_pages`` is GitLab's ``X-Total-Pages`` (``None`` when GitLab did not send it).
    """

    def __init__(self, total_pages: int | None, max_pages: int) -> None:
        self.total_pages = total_pages
        self.max_pages = max_pages
        super().__init__(
            f"the list has {'an unknown number of' if total_pages is None else total_pages}"
            f" pages, more than {max_pages}"
        )


__all__ = [
    "FAILURE_REASONS",
    "ApiError",
    "GitLabError",
    "NotFoundError",
    "PageBudgetExceeded",
    "PrivateProfileError",
    "RateLimitedError",
    "RequestTimeoutError",
    "UnauthorizedError",
]
