"""One repository per aggregate; the rest of r1serve reads and writes rows only through these."""

from r1serve.storage.repositories.api_keys import ApiKeyRepository
from r1serve.storage.repositories.conversations import ConversationRepository, PageCursor
from r1serve.storage.repositories.quotas import QuotaRepository, RateCounterRepository
from r1serve.storage.repositories.sessions import SessionRepository
from r1serve.storage.repositories.usage import UsageDay, UsageRepository, UsageTotals
from r1serve.storage.repositories.users import UserRepository

__all__ = [
    "ApiKeyRepository",
    "ConversationRepository",
    "PageCursor",
    "QuotaRepository",
    "RateCounterRepository",
    "SessionRepository",
    "UsageDay",
    "UsageRepository",
    "UsageTotals",
    "UserRepository",
]
