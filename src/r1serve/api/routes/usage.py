"""Usage: mine, and for admins everyone's."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Query

from r1serve.api.account_schemas import (
    QuotaStatusOut,
    UsageDayOut,
    UsageOut,
    UsageRecordOut,
    UsageTotalsOut,
)
from r1serve.api.params import UserIdQuery
from r1serve.api.security import Accounts, Admin, Caller
from r1serve.auth.usage_reports import UsageReport

router = APIRouter(tags=["usage"])


def _out(report: UsageReport, quota: QuotaStatusOut | None) -> UsageOut:
    return UsageOut(
        since=report.since,
        totals=UsageTotalsOut.of(report.totals),
        days=[UsageDayOut.of(day) for day in report.days],
        recent=[UsageRecordOut(**asdict(entry)) for entry in report.recent],
        quota=quota,
    )


@router.get("/api/usage", response_model=UsageOut)
def my_usage(
    accounts: Accounts,
    caller: Caller,
    days: int = Query(30, ge=1, le=366),
    recent: int = Query(50, ge=0, le=500),
) -> UsageOut:
    """My requests and tokens per day, my latest requests, and my quota today."""
    report = accounts.reports.report(user_id=caller.user_id, days=days, recent=recent)
    return _out(report, QuotaStatusOut.of(accounts.quotas.status(caller)))


@router.get("/api/admin/usage", response_model=UsageOut)
def all_usage(
    accounts: Accounts,
    admin: Admin,
    user_id: UserIdQuery = None,
    days: int = Query(30, ge=1, le=366),
    recent: int = Query(50, ge=0, le=500),
) -> UsageOut:
    """Everyone's usage, or one user's."""
    return _out(accounts.reports.report(user_id=user_id, days=days, recent=recent), None)
