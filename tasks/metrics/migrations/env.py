"""Alembic environment of the metrics database (run through :meth:`tasks.metrics.MetricsStore.upgrade`).

A connection handed over in ``config.attributes["connection"]`` is used as is (the caller holds
the migration lock and the transaction); otherwise ``sqlalchemy.url`` is connected to.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from tasks.metrics.models import SEARCH_INDEXES, VERSION_TABLE, Base

target_metadata = Base.metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate looks only at our own tables (the database may hold Airflow's too)."""
    if type_ == "table":
        return name in target_metadata.tables
    return name not in SEARCH_INDEXES  # the full-text index of one dialect (migration 0002)


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        render_as_batch=True,  # SQLite: ALTER through table copies
        compare_type=True,
        **kwargs,
    )


def run_offline() -> None:
    config = context.config
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=NullPool)
    with engine.begin() as conn:
        _run(conn)


def main() -> None:
    """Alembic runs this file as a script; importing it elsewhere (no migration under way) does nothing."""
    if not hasattr(context, "config"):
        return
    if context.is_offline_mode():
        run_offline()
    else:
        run_online()


main()
