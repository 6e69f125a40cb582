"""schemathesis over the app's own ``/openapi.json`` on the fake engine, with and without logins.

Bounded and reproducible: a fixed number of examples per operation, derandomized, so the run
takes well under a minute. Every response must be a non-5xx that conforms to the document
(status code documented, content type, body schema) and carries the security headers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from r1serve.auth import AuthService
from r1serve.engine.fake import FakeEngine
from support.accounts import secure_settings
from support.api import LiveServer, make_settings

EXAMPLES = 10
# A pull downloads from the Hub; it is covered by its own tests on a local mirror.
SKIP = {("POST", "/api/pull")}
SECURITY_HEADERS = ("content-security-policy", "x-content-type-options")
# What the answers must be; not whether the server accepts every schema-valid request (the
# document cannot say "prompt must not be empty after tokenization") or refuses every invalid one.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


class Credentials:
    """An admin API key that is made anew whenever a generated call revoked or weakened it."""

    def __init__(self, accounts: AuthService | None) -> None:
        self._accounts = accounts
        self._key: str | None = None

    def headers(self) -> dict[str, str]:
        if self._accounts is None:
            return {}
        if self._key is None or not self._admin_key_works(self._key):
            self._restore_admin()
            self._key = self._accounts.keys.create(self._admin_id()).key
        return {"Authorization": f"Bearer {self._key}"}

    def _admin_id(self) -> int:
        assert self._accounts is not None
        return self._accounts.users.by_name("admin").id

    def _admin_key_works(self, key: str) -> bool:
        assert self._accounts is not None
        try:
            principal = self._accounts.authenticate(session_token=None, api_key=key)
        except Exception:
            return False
        return principal.role == "admin"

    def _restore_admin(self) -> None:
        assert self._accounts is not None
        admin = self._admin_id()
        self._accounts.users.set_role(admin, "admin")
        self._accounts.users.set_disabled(admin, False)


@pytest.fixture(params=["auth-off", "auth-on"])
def live(request: pytest.FixtureRequest) -> Iterator[tuple[LiveServer, Credentials]]:
    settings = secure_settings(auth_recheck_s=5.0) if request.param == "auth-on" else None
    settings = settings or make_settings()
    with LiveServer(FakeEngine("Hello there."), settings) as server:
        yield server, Credentials(server.accounts if settings.auth else None)


def _operations(server: LiveServer, headers: dict[str, str]) -> list[Any]:
    document = requests.get(f"{server.url}/openapi.json", headers=headers, timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    return [op for op in operations if (op.method.upper(), op.path) not in SKIP]


@pytest.mark.timeout(240)
def test_no_server_errors_and_responses_follow_the_document(
    live: tuple[LiveServer, Credentials],
) -> None:
    server, credentials = live
    session = requests.Session()
    problems: list[str] = []
    answered: set[str] = set()  # operations that got past auth and validation at least once
    operations = _operations(server, credentials.headers())
    assert len(operations) > 40

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            headers = credentials.headers()
            response = case.call(base_url=server.url, session=session, headers=headers, timeout=30)
            label = f"{case.method} {case.formatted_path} -> {response.status_code}"
            if response.status_code < 300:
                answered.add(f"{case.operation.method.upper()} {case.operation.path}")
            if response.status_code >= 500:
                problems.append(f"{label}: {response.text[:300]}")
            missing = [h for h in SECURITY_HEADERS if h not in response.headers]
            if missing:
                problems.append(f"{label}: missing {missing}")
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except FailureGroup as group:
                problems.append(f"{label}: {group}"[:1500])

        check()

    # The run reached the handlers, not only the auth and validation in front of them.
    assert len(answered) >= 20, sorted(answered)
    assert not problems, "\n\n".join(problems[:20]) + f"\n\n({len(problems)} problems)"
