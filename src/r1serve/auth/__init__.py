"""Passwords, sessions, API keys, quotas and usage recording; no FastAPI imports here.

``AuthService(settings, database)`` bundles the services; the HTTP layer resolves a caller with
``AuthService.authenticate`` and gets a ``Principal``.
"""

from r1serve.auth.principal import (
    ApiKeyInfo,
    CreatedApiKey,
    Principal,
    QuotaLimits,
    UserInfo,
)
from r1serve.auth.service import AuthService, close_accounts, open_accounts
from r1serve.auth.sessions import Login
from r1serve.auth.usage import UsageEvent, UsageRecorder

__all__ = [
    "ApiKeyInfo",
    "AuthService",
    "CreatedApiKey",
    "Login",
    "Principal",
    "QuotaLimits",
    "UsageEvent",
    "UsageRecorder",
    "UserInfo",
    "close_accounts",
    "open_accounts",
]
