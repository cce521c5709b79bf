"""HEARTH_HTTPS=true with a real SECRET_KEY and ALLOWED_HOSTS passes `check --deploy`."""

from __future__ import annotations

import secrets
import subprocess

import pytest

from tests.processes import manage, process_env


def check_deploy(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        manage("check", "--deploy", "--fail-level", "WARNING"),
        env=process_env(
            SECRET_KEY=secrets.token_urlsafe(60), ALLOWED_HOSTS="hearth.example", **env
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_check_deploy__clean_with_hearth_https() -> None:
    result = check_deploy(HEARTH_HTTPS="true")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.slow
def test_check_deploy__without_hearth_https_warns_about_cookies_and_hsts() -> None:
    result = check_deploy(HEARTH_HTTPS="false")
    assert result.returncode != 0
    for warning in ("W004", "W008", "W012", "W016"):
        assert warning in result.stderr + result.stdout
