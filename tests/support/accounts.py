"""Account services for app tests: cheap argon2, a database in a temporary folder."""

from __future__ import annotations

import argon2

from r1serve.auth import AuthService, open_accounts
from r1serve.settings import Settings


def test_accounts(settings: Settings) -> AuthService:
    """Started account services over ``settings``' database; close with ``close_accounts``."""
    return open_accounts(settings, password_parameters=argon2.profiles.CHEAPEST)
