"""Alembic environment of the inspection store; the URL comes from ``Config.attributes["url"]``
(set by ``anomalens.service.store.migrate``) or from ``sqlalchemy.url`` for the ``alembic`` command line."""

from alembic import context
from sqlalchemy import create_engine, text

MIGRATION_LOCK = 0x616E6F6D  # "anom": an arbitrary advisory-lock key of this schema
config = context.config
url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")


def run_migrations_offline() -> None:
    context.configure(url=url, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, render_as_batch=url.startswith("sqlite"))
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    # stations starting together: one migrates, the others wait and then find it done
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
