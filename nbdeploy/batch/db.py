"""Databases for batch jobs, through SQLAlchemy 2: what a ``con=`` can be, and the few dialect facts a job needs.

A ``con`` is a SQLAlchemy URL (``postgresql+psycopg://…``, ``sqlite:///scores.db``), a bare path (an SQLite file,
the embedded default), an ``Engine`` or a ``Connection`` (its engine is used: a job opens its own connections, one
to stream the source and one to write, so a long read never holds the writer's transaction).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..errors import UsageError

#: File names taken for SQLite databases when ``into=`` or ``con=`` is a path.
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def is_url(text: str) -> bool:
    """``dialect[+driver]://…``: a database, not a file."""
    head, sep, _ = text.partition("://")
    return bool(sep) and head.replace("+", "").replace("_", "").isalnum()


def engine_for(con: Any) -> Engine:
    """An Engine for what the user passed; a missing driver is named with the package to install."""
    if isinstance(con, Engine):
        return con
    if isinstance(con, sa.Connection):
        return con.engine
    if isinstance(con, Path) or (isinstance(con, str) and not is_url(con)):
        url: Any = f"sqlite:///{Path(con).expanduser().resolve()}"
    elif isinstance(con, (str, sa.URL)):
        url = con
    else:
        raise UsageError(
            f"con= takes a database URL, an SQLite file path, an Engine or a Connection, not a {type(con).__name__}",
            hint="e.g. con='postgresql+psycopg://user@host/db' or con='customers.db'",
        )
    try:
        engine = sa.create_engine(url)
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"no database driver '{exc.name}' for {sa.make_url(url).drivername}",
            hint="for PostgreSQL: pip install 'psycopg[binary]' (or nbdeploy[postgres]) and use postgresql+psycopg://",
        ) from None
    except sa.exc.ArgumentError as exc:
        raise UsageError(f"not a database URL: {con!r} ({exc})", hint="see SQLAlchemy's URL format") from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_con: Any, _record: Any) -> None:
    """WAL: the job streams its source and commits each chunk from two connections, even in one SQLite file
    (rollback-journal mode would make the writer wait for the reader); a busy timeout for other writers."""
    cur = dbapi_con.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


def same_database(a: Engine, b: Engine) -> bool:
    return a is b or str(a.url) == str(b.url)


def table_ref(name: str) -> tuple[str | None, str]:
    """``schema.table`` or ``table``."""
    schema, _, table = name.rpartition(".")
    if not table:
        raise UsageError(f"not a table name: {name!r}")
    return (schema or None), table


def quoted(engine: Engine, name: str) -> str:
    """A table name quoted for this dialect (mixed case, reserved words)."""
    schema, table = table_ref(name)
    prep = engine.dialect.identifier_preparer
    return (f"{prep.quote_schema(schema)}." if schema else "") + prep.quote(table)


def describe(engine: Engine) -> str:
    """The URL without its password, for cards and messages."""
    return engine.url.render_as_string(hide_password=True)
