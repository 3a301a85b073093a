"""PostgreSQL (asyncpg) and Redis: connections, migrations, PII vault, audit log."""
