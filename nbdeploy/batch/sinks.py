"""Where the predictions go: a Parquet or CSV file, or a table; each chunk committed whole or not at all.

A table is its own checkpoint: the predictions and the quarantined rows of a chunk are inserted in one transaction,
the key column is the primary key (a key written twice is refused by the database), and on a second run the keys
already there are skipped. A file cannot be appended to safely (a Parquet footer, a half-written CSV line), so a
job writes numbered part files beside it, listed in a checkpoint (``checkpoint.py``), and puts the file together
from them at the end, streaming, part by part.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from ..errors import UsageError
from . import db
from .checkpoint import Checkpoint, DuplicateKey
from .quarantine import COLUMNS, BadRow

PARTS = ".nbdeploy-parts"  # the folder beside a file destination while its job runs


class Sink(Protocol):
    """A destination that commits one chunk at a time."""

    description: str
    quarantine_description: str

    def open(self, meta: dict[str, Any], overwrite: bool) -> tuple[int, int]:
        """Prepare; rows scored and rows quarantined by an earlier run of this job (0, 0 for a new one)."""
        ...

    def done(self, keys: list[Any]) -> set[Any]:
        """Which of ``keys`` an earlier run committed."""
        ...

    def write(self, scored: pd.DataFrame, bad: list[BadRow]) -> None:
        """Commit one chunk: its predictions and its quarantined rows, together. DuplicateKey if a key is there."""
        ...

    def finish(self) -> None:
        """The job is complete: make the destination whole."""
        ...

    def close(self) -> None: ...

    def read(self) -> pd.DataFrame:
        """The destination's rows (for a notebook; memory grows with them)."""
        ...

    def read_quarantine(self) -> pd.DataFrame: ...


class FileSink:
    """A Parquet or CSV file, written from part files when every chunk is done."""

    def __init__(self, path: Path, kind: str, key: str, quarantine: Path | None) -> None:
        self.path = path
        self.kind = kind
        self.key = key
        self.parts = path.with_name(path.name + PARTS)
        self.quarantine = quarantine or path.with_name(f"{_stem(path)}.quarantine.csv")
        self.quarantine_given = quarantine is not None
        self.description = str(path)
        self.quarantine_description = str(self.quarantine)
        self.ck: Checkpoint | None = None

    def open(self, meta: dict[str, Any], overwrite: bool) -> tuple[int, int]:
        if overwrite:
            shutil.rmtree(self.parts, ignore_errors=True)
            for done in (self.path, self.quarantine):
                done.unlink(missing_ok=True)
        elif self.path.exists() and not self.parts.exists():
            raise UsageError(
                f"{self.path} exists (a finished job's output?)",
                hint="pass overwrite=True (--overwrite) to score again into it, or choose another destination",
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.parts.mkdir(exist_ok=True)
        self.ck = Checkpoint(self.parts / "checkpoint.db")
        earlier = self.ck.meta()
        if earlier and any(self.ck.counts()):  # a job that committed something resumes only as itself
            _same_job(earlier, meta, self.parts)
        else:
            self.ck.set_meta(meta)
        listed = {file for _, file, _ in self.ck.parts()}
        for leftover in self.parts.glob("part-*"):  # a part renamed in place by a job killed before its commit
            if leftover.name not in listed:
                leftover.unlink()
        return self.ck.counts()

    def done(self, keys: list[Any]) -> set[Any]:
        assert self.ck is not None
        return self.ck.done(keys)

    def write(self, scored: pd.DataFrame, bad: list[BadRow]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        assert self.ck is not None
        keys = scored[self.key].tolist()
        if not keys:
            self.ck.commit(None, [], bad, lambda: None)
            return
        final = self.parts / f"part-{self.ck.next_seq():08d}.parquet"
        temp = final.with_suffix(".tmp")
        pq.write_table(pa.Table.from_pandas(scored, preserve_index=False), temp)
        try:
            self.ck.commit(final.name, keys, bad, lambda: os.replace(temp, final))
        finally:
            temp.unlink(missing_ok=True)

    def finish(self) -> None:
        """Parts into one file (written aside, then renamed), the quarantine beside it, the parts removed."""
        assert self.ck is not None
        files = [self.parts / file for _, file, _ in self.ck.parts()]
        temp = self.path.with_name(f".{self.path.name}.nbdeploy-tmp")
        _concatenate(files, temp, self.kind)
        os.replace(temp, self.path)
        bad = self.ck.quarantined()
        if bad or self.quarantine_given:
            _write_quarantine(pd.DataFrame(bad, columns=[self.key, *COLUMNS]), self.quarantine)
        self.close()
        shutil.rmtree(self.parts, ignore_errors=True)

    def close(self) -> None:
        if self.ck is not None:
            self.ck.close()
            self.ck = None

    def read(self) -> pd.DataFrame:
        return pd.read_parquet(self.path) if self.kind == "parquet" else pd.read_csv(self.path)

    def read_quarantine(self) -> pd.DataFrame:
        if not self.quarantine.exists():
            return pd.DataFrame(columns=[self.key, *COLUMNS])
        if self.quarantine.suffix == ".parquet":
            return pd.read_parquet(self.quarantine)
        return pd.read_csv(self.quarantine, dtype={c: "string" for c in COLUMNS})


def _stem(path: Path) -> str:
    name = path.name
    for suffix in reversed(path.suffixes):
        name = name.removesuffix(suffix)
    return name


def _same_job(earlier: dict[str, Any], now: dict[str, Any], parts: Path) -> None:
    """A checkpoint resumes only the job that made it: the same key, method and version."""
    for field in ("key", "method", "deployment", "version"):
        if earlier.get(field) != now.get(field):
            raise UsageError(
                f"the unfinished job in {parts} was {field} {earlier.get(field)!r}; this call has {now.get(field)!r}",
                hint="run the call that began it to finish it, or pass overwrite=True (--overwrite) to start again",
            )


def _concatenate(files: list[Path], out: Path, kind: str) -> None:
    """The parts as one Parquet or CSV file, one part in memory at a time."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    schema = None
    writer: Any = None
    try:
        for file in files:
            table = pq.read_table(file)
            if schema is None:
                schema = table.schema.remove_metadata()
                writer = pq.ParquetWriter(out, schema) if kind == "parquet" else pacsv.CSVWriter(str(out), schema)
            table = table.cast(schema) if table.schema.remove_metadata() != schema else table
            writer.write_table(table)
        if writer is None:  # nothing was scored: an empty file with no columns but the key's
            pd.DataFrame().to_parquet(out) if kind == "parquet" else out.write_text("")
    finally:
        if writer is not None:
            writer.close()


def _write_quarantine(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.nbdeploy-tmp")
    if path.suffix == ".parquet":
        frame.astype({c: "string" for c in COLUMNS}).to_parquet(temp, index=False)
    else:
        frame.to_csv(temp, index=False)
    os.replace(temp, path)


class TableSink:
    """A table (created on the first chunk, the key its primary key) and its quarantine table, in one database."""

    def __init__(self, engine: Any, table: str, key: str, quarantine: str | None) -> None:
        self.engine = engine
        self.name = table
        self.key = key
        self.quarantine_name = quarantine or f"{table}_quarantine"
        where = db.describe(engine)
        self.description = f"table {table} in {where}"
        self.quarantine_description = f"table {self.quarantine_name} in {where}"
        self.table: Any = None
        self.qtable: Any = None
        self._copy = engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"

    def _reflect(self, name: str) -> Any:
        import sqlalchemy as sa

        schema, table = db.table_ref(name)
        try:
            return sa.Table(table, sa.MetaData(), schema=schema, autoload_with=self.engine)
        except sa.exc.NoSuchTableError:
            return None

    def open(self, meta: dict[str, Any], overwrite: bool) -> tuple[int, int]:
        import sqlalchemy as sa

        if overwrite:
            with self.engine.begin() as conn:
                for name in (self.name, self.quarantine_name):
                    conn.execute(sa.text(f"DROP TABLE IF EXISTS {db.quoted(self.engine, name)}"))
        self.table, self.qtable = self._reflect(self.name), self._reflect(self.quarantine_name)
        for table in (self.table, self.qtable):
            if table is not None and self.key not in table.c:
                raise UsageError(
                    f"table {table.fullname} exists without the key column '{self.key}'",
                    hint="choose another into_table=, or pass overwrite=True (--overwrite) to replace it",
                )
        with self.engine.connect() as conn:
            return tuple(  # type: ignore[return-value]
                0 if t is None else int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
                for t in (self.table, self.qtable)
            )

    def done(self, keys: list[Any]) -> set[Any]:
        import sqlalchemy as sa

        found: set[Any] = set()
        dialect = self.engine.dialect.name
        col = self.engine.dialect.identifier_preparer.quote(self.key)
        with self.engine.connect() as conn:
            for table in (self.table, self.qtable):
                if table is None:
                    continue
                name = db.quoted(self.engine, table.fullname)
                # one parameter for the whole chunk where the database can take a list (an IN of 20,000
                # bound values costs PostgreSQL 4x more, and SQLite allows 32,766 of them)
                if dialect == "postgresql":
                    sql = sa.text(f"SELECT {col} FROM {name} WHERE {col} = ANY(:keys)")
                    found.update(conn.execute(sql, {"keys": keys}).scalars())
                elif dialect == "sqlite":
                    sql = sa.text(f"SELECT {col} FROM {name} WHERE {col} IN (SELECT value FROM json_each(:keys))")
                    found.update(conn.execute(sql, {"keys": json.dumps(keys)}).scalars())
                else:
                    for start in range(0, len(keys), 1000):
                        where = table.c[self.key].in_(keys[start : start + 1000])
                        found.update(conn.execute(sa.select(table.c[self.key]).where(where)).scalars())
        return found

    def write(self, scored: pd.DataFrame, bad: list[BadRow]) -> None:
        import sqlalchemy as sa

        try:
            with self.engine.begin() as conn:
                if len(scored):
                    if self.table is None:
                        self.table = self._create(conn, self.name, _columns(scored, self.key))
                    self._insert(conn, self.table, scored)
                if bad:
                    if self.qtable is None:
                        key_type = _sql_type(scored[self.key]) if len(scored) else _type_of(bad[0].key)
                        cols = [sa.Column(self.key, key_type, primary_key=True)]
                        cols += [sa.Column(c, sa.Text) for c in COLUMNS]
                        self.qtable = self._create(conn, self.quarantine_name, cols)
                    frame = pd.DataFrame([b.as_tuple() for b in bad], columns=[self.key, *COLUMNS])
                    self._insert(conn, self.qtable, frame)
        except sa.exc.IntegrityError:
            self.table, self.qtable = self._reflect(self.name), self._reflect(self.quarantine_name)
            keys = [*scored[self.key].tolist(), *(b.key for b in bad)]
            hits = self.done(keys)
            raise DuplicateKey(next((k for k in keys if k in hits), keys[0] if keys else None)) from None

    def _create(self, conn: Any, name: str, columns: list[Any]) -> Any:
        import sqlalchemy as sa

        schema, table_name = db.table_ref(name)
        table = sa.Table(table_name, sa.MetaData(), *columns, schema=schema)
        table.create(conn, checkfirst=True)
        return table

    def _insert(self, conn: Any, table: Any, frame: pd.DataFrame) -> None:
        columns = [str(c) for c in frame.columns]
        rows = list(zip(*(_values(frame[c]) for c in columns), strict=True))
        if self._copy:  # PostgreSQL: COPY, in the same transaction (several times faster than INSERT … VALUES)
            cursor = conn.connection.driver_connection.cursor()
            listed = ", ".join(self.engine.dialect.identifier_preparer.quote(c) for c in columns)
            with cursor.copy(f"COPY {db.quoted(self.engine, table.fullname)} ({listed}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        # the driver's executemany with plain tuples: SQLAlchemy's per-row parameter handling costs 10x more
        style = self.engine.dialect.paramstyle
        if style == "named":
            marks = [f":c{i}" for i in range(len(columns))]
            params: list[Any] = [{f"c{i}": v for i, v in enumerate(row)} for row in rows]
        else:
            marks = {"qmark": ["?"] * len(columns), "numeric": [f":{i + 1}" for i in range(len(columns))]}.get(
                style, ["%s"] * len(columns)
            )
            params = rows
        listed = ", ".join(self.engine.dialect.identifier_preparer.quote(c) for c in columns)
        sql = f"INSERT INTO {db.quoted(self.engine, table.fullname)} ({listed}) VALUES ({', '.join(marks)})"
        conn.exec_driver_sql(sql, params)

    def finish(self) -> None:
        return None

    def close(self) -> None:
        return None

    def read(self) -> pd.DataFrame:
        with self.engine.connect() as conn:
            return pd.read_sql_table(db.table_ref(self.name)[1], conn, schema=db.table_ref(self.name)[0])

    def read_quarantine(self) -> pd.DataFrame:
        if self._reflect(self.quarantine_name) is None:
            return pd.DataFrame(columns=[self.key, *COLUMNS])
        schema, name = db.table_ref(self.quarantine_name)
        with self.engine.connect() as conn:
            return pd.read_sql_table(name, conn, schema=schema)


def _values(col: pd.Series) -> list[Any]:
    """Plain Python values (DBAPI drivers do not take NumPy scalars); missing as None."""
    if col.dtype.kind in "iub":
        return col.tolist()
    values = col.astype(object).where(col.notna(), None).tolist()
    return values


def _columns(frame: pd.DataFrame, key: str) -> list[Any]:
    import sqlalchemy as sa

    return [sa.Column(str(c), _sql_type(frame[c]), primary_key=(c == key)) for c in frame.columns]


def _sql_type(col: pd.Series) -> Any:
    import sqlalchemy as sa

    kind = col.dtype.kind
    if kind == "b":
        return sa.Boolean()
    if kind in "iu":
        return sa.BigInteger()
    if kind == "f":
        return sa.Double()
    if kind == "M":
        return sa.DateTime(timezone=getattr(col.dtype, "tz", None) is not None)
    return sa.Text()


def _type_of(value: Any) -> Any:
    import sqlalchemy as sa

    return sa.BigInteger() if isinstance(value, int) and not isinstance(value, bool) else sa.Text()


def open_sink(
    into: Any, *, key: str, into_table: str | None, into_con: Any, source_engine: Any, quarantine: Any
) -> Sink:
    """The destination the user named: a file path, a database (URL or SQLite file) with a table, or a table in
    the source's database."""
    if into is None and into_table is None:
        raise UsageError(
            "say where the predictions go: into='scores.parquet' (or .csv), or into_table='scores' with a database",
            hint="into= takes a .parquet or .csv path, an SQLite file (.db) or a database URL",
        )
    engine = None
    if into_con is not None:
        engine = db.engine_for(into_con)
    if into is not None:
        text = str(into)
        if (isinstance(into, str) and db.is_url(into)) or Path(text).suffix.lower() in db.SQLITE_SUFFIXES:
            if engine is not None:
                raise UsageError("into= names a database already: pass into_con= or a database into=, not both")
            engine = db.engine_for(into)
        else:
            if into_table is not None or engine is not None:
                raise UsageError(
                    "into= is a file: into_table= and into_con= are for a database destination",
                    hint="into='scores.db' (SQLite) or a database URL, with into_table='scores'",
                )
            path = Path(text).expanduser()
            kind = _file_kind(path)
            if quarantine is not None and Path(str(quarantine)).suffix.lower() not in (".csv", ".parquet"):
                raise UsageError(
                    f"quarantine= {quarantine!r}: a file destination keeps its quarantine in a .csv or .parquet file"
                )
            return FileSink(path, kind, key, Path(str(quarantine)).expanduser() if quarantine is not None else None)
    if engine is None:
        engine = source_engine
    if engine is None:
        raise UsageError(
            f"into_table='{into_table}': in which database?",
            hint="pass into_con='scores.db' (SQLite) or a database URL; with sql=/table= it defaults to con=",
        )
    table = into_table or "predictions"
    if quarantine is not None and not isinstance(quarantine, str):
        raise UsageError("quarantine= for a table destination is a table name in the same database")
    return TableSink(engine, table, key, quarantine)


def _file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise UsageError(
        f"unknown destination type: {path.name}",
        hint="into= takes a .parquet or .csv file, an SQLite file (.db, .sqlite) or a database URL (with into_table=)",
    )
