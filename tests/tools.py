"""Helpers for tests that need external programs (promtool, prometheus)."""

from __future__ import annotations

import os
import shutil

import pytest


def require_program(name: str) -> str:
    """The path of ``name``; skip when it is missing, but fail when ``CI`` is set."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package 'prometheus')"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run this test")
        pytest.skip(message)
    return path
