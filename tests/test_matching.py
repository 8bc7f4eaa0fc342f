"""Author matching by the DESIGN rules: known emails, no-reply forms, names; never substrings."""

from __future__ import annotations

import pytest

from exporter.matching import Identity, noreply_emails, noreply_id, shared_names

ANN = Identity.build(
    user_id=42,
    username="ann",
    display_name="Ann Smith",
    host="gitlab.example.com",
    public_email="Ann@Example.com",
    extra_emails=["ann@old-company.example"],
)


def test_noreply_forms() -> None:
    assert noreply_emails(42, "ann", "gitlab.com") == (
        "42-ann@users.noreply.gitlab.com",
        "ann@users.noreply.gitlab.com",
    )


@pytest.mark.parametrize(
    ("name", "email"),
    [
        ("whoever", "ann@example.com"),  # public email, other case
        ("whoever", "ANN@EXAMPLE.COM"),
        ("whoever", "42-ann@users.noreply.gitlab.example.com"),
        ("whoever", "ann@users.noreply.gitlab.example.com"),
        ("whoever", "Ann@Old-Company.example"),  # configured extra email
        ("  ann smith ", "laptop@localhost"),  # display name, trimmed, any case
        ("ANN", "laptop@localhost"),  # username as name
    ],
)
def test_matches(name: str, email: str) -> None:
    assert ANN.matches(name, email)


@pytest.mark.parametrize(
    ("name", "email"),
    [
        ("Anna", "anna@example.com"),  # username is a prefix of another's
        ("Someone", "ann.smith@example.com"),  # username is a substring of the email
        ("Ann Smithers", "x@y"),  # display name is a prefix of the author name
        ("Someone", "43-ann@users.noreply.gitlab.example.com"),  # wrong user id
        ("Someone", "42-ann@users.noreply.gitlab.com"),  # other host
        ("Someone", "ann@example.com.evil"),
        ("", ""),
    ],
)
def test_does_not_match(name: str, email: str) -> None:
    assert not ANN.matches(name, email)


def test_empty_public_email_does_not_match_empty_author_email() -> None:
    identity = Identity.build(
        user_id=1, username="bob", display_name="Bob", host="h", public_email=""
    )
    assert not identity.matches("Someone", "")
    assert "" not in identity.emails


def test_names_shared_by_two_people_identify_neither() -> None:
    people = [("ann", "Ann Lee"), ("alee", " ann lee "), ("bob", "Bob"), ("Bobby", "BOB")]
    shared = shared_names(people)
    assert shared == {"ann lee": ("alee", "ann"), "bob": ("Bobby", "bob")}
    identity = Identity.build(
        user_id=1, username="ann", display_name="Ann Lee", host="h", ambiguous_names=shared
    )
    assert not identity.matches("Ann Lee", "laptop@localhost")
    assert identity.matches("ann", "laptop@localhost")  # the username is still hers


@pytest.mark.parametrize(
    ("email", "user_id"),
    [
        ("42-ann@users.noreply.gitlab.example.com", 42),
        ("42-old.name@users.noreply.gitlab.example.com", 42),  # renamed: the ID decides
        ("42-@users.noreply.gitlab.example.com", None),
        ("x42-ann@users.noreply.gitlab.example.com", None),
        ("42ann@users.noreply.gitlab.example.com", None),
        ("42-ann@users.noreply.gitlab.example.com.evil", None),
        ("42-ann@sub.users.noreply.gitlab.example.com", None),
        ("\u0664\u0662-ann@users.noreply.gitlab.example.com", None),  # non-ASCII digits
    ],
)
def test_noreply_id(email: str, user_id: int | None) -> None:
    assert noreply_id(email, "users.noreply.gitlab.example.com") == user_id
