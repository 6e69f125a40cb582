"""Database models, migrations and repositories; no FastAPI imports here.

``Database.open(settings)`` connects (SQLite file in the data directory, or ``database_url``) and
migrates to the newest schema; ``database.read()`` / ``database.write()`` give SQLAlchemy sessions
for the repositories in ``r1serve.storage.repositories``.
"""

from r1serve.storage.database import Database, database_url, head_revision
from r1serve.storage.models import utcnow

__all__ = ["Database", "database_url", "head_revision", "utcnow"]
