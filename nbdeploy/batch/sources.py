"""Where the rows come from: a DataFrame, a Parquet or CSV file, a table or query in a database.

Each source yields chunks of at most ``rows`` rows and never holds more: Parquet is read batch by batch (pyarrow),
CSV chunk by chunk (pandas' C parser, as ``pd.read_csv`` reads it in a notebook), SQL through a server-side cursor
(``stream_results``). Only the columns the job needs are read. ``total_rows`` feeds the progress bar's time left.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from ..errors import UsageError
from . import db

FILE_KINDS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv"}
_COMPRESSED = (".gz", ".bz2", ".zip", ".xz", ".zst")


class Source(Protocol):
    """Rows to score, in chunks."""

    description: str

    def columns(self) -> list[str]:
        """Every column the source has."""
        ...

    def total_rows(self) -> int | None:
        """How many rows, if it can be told cheaply (for the time left); None otherwise."""
        ...

    def duplicate_key(self, key: str) -> Any | None:
        """A key that occurs twice, when the source can tell before the job starts (None: none, or not told here:
        the checkpoint refuses a repeated key when it comes)."""
        ...

    def chunks(self, rows: int, columns: list[str], text_columns: list[str]) -> Iterator[pd.DataFrame]:
        """The source's ``columns`` in chunks of at most ``rows``; ``text_columns`` read as text where the format
        would guess (CSV: a string column of digits stays a string)."""
        ...


class FrameSource:
    """A DataFrame already in memory (chunks are views of it)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.description = f"DataFrame ({len(frame):,} rows)"

    def columns(self) -> list[str]:
        return [str(c) for c in self.frame.columns]

    def total_rows(self) -> int:
        return len(self.frame)

    def duplicate_key(self, key: str) -> Any | None:
        dup = self.frame[key].duplicated()
        return self.frame[key][dup].iloc[0] if dup.any() else None

    def chunks(self, rows: int, columns: list[str], text_columns: list[str]) -> Iterator[pd.DataFrame]:
        frame = self.frame[columns]
        for start in range(0, len(frame), rows):
            yield frame.iloc[start : start + rows].reset_index(drop=True)


class ParquetSource:
    """A Parquet file, or a folder of them (read in name order), batch by batch."""

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
        if not self.files:
            raise UsageError(f"no .parquet files in the folder {path}")
        self._pq = pq
        self.description = str(path)

    def columns(self) -> list[str]:
        return list(self._pq.ParquetFile(self.files[0]).schema_arrow.names)

    def total_rows(self) -> int:
        return sum(self._pq.ParquetFile(f).metadata.num_rows for f in self.files)

    def duplicate_key(self, key: str) -> Any | None:
        return None  # the checkpoint's primary key refuses it as it comes, without reading the key column twice

    def chunks(self, rows: int, columns: list[str], text_columns: list[str]) -> Iterator[pd.DataFrame]:
        for path in self.files:
            with self._pq.ParquetFile(path) as f:
                for batch in f.iter_batches(batch_size=rows, columns=columns):
                    yield batch.to_pandas()


class CsvSource:
    """A CSV file (or compressed CSV), chunk by chunk with pandas' own parser."""

    def __init__(self, path: Path, **read_options: Any) -> None:
        self.path = path
        self.options: dict[str, Any] = {"sep": "\t"} if path.suffix == ".tsv" else {}
        self.options.update(read_options)
        self.description = str(path)

    def columns(self) -> list[str]:
        return [str(c) for c in pd.read_csv(self.path, nrows=0, **self.options).columns]

    def total_rows(self) -> int | None:
        """Lines after the header (a quoted value holding a newline makes it an estimate); None when compressed."""
        if self.path.suffix in _COMPRESSED:
            return None
        lines, last = 0, b"\n"
        with self.path.open("rb") as f:
            while block := f.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
        return max(lines + (last != b"\n") - 1, 0)

    def duplicate_key(self, key: str) -> Any | None:
        return None

    def chunks(self, rows: int, columns: list[str], text_columns: list[str]) -> Iterator[pd.DataFrame]:
        dtype = dict.fromkeys(text_columns, str)
        with pd.read_csv(self.path, chunksize=rows, usecols=columns, dtype=dtype, **self.options) as reader:
            for chunk in reader:
                yield chunk[columns].reset_index(drop=True)


class SqlSource:
    """A table or a query, streamed through a server-side cursor."""

    def __init__(self, engine: Any, sql: str | None = None, table: str | None = None) -> None:
        self.engine = engine
        if table is not None:
            self.query = f"SELECT * FROM {db.quoted(engine, table)}"
            what = f"table {table}"
        else:
            self.query = str(sql).strip().rstrip(";")
            what = "query"
        self.description = f"{what} in {db.describe(engine)}"

    def _sub(self) -> str:
        return f"({self.query}) AS nbdeploy_source"

    def columns(self) -> list[str]:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(f"SELECT * FROM {self._sub()} WHERE 1 = 0")).keys())

    def total_rows(self) -> int:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {self._sub()}")).scalar_one())

    def duplicate_key(self, key: str) -> Any | None:
        """Asked of the database, which counts without sending the keys over."""
        import sqlalchemy as sa

        col = self.engine.dialect.identifier_preparer.quote(key)
        sql = f"SELECT {col} FROM {self._sub()} GROUP BY {col} HAVING COUNT(*) > 1"
        with self.engine.connect() as conn:
            row = conn.execute(sa.text(sql)).first()
        return None if row is None else row[0]

    def chunks(self, rows: int, columns: list[str], text_columns: list[str]) -> Iterator[pd.DataFrame]:
        import sqlalchemy as sa

        prep = self.engine.dialect.identifier_preparer
        listed = ", ".join(prep.quote(c) for c in columns)
        with self.engine.connect() as conn:
            streamed = conn.execution_options(stream_results=True, max_row_buffer=rows)
            result = streamed.execute(sa.text(f"SELECT {listed} FROM {self._sub()}"))
            for part in result.partitions(rows):
                # columns from plain tuples: pandas asks each Row for ``_asdict`` otherwise, a raised KeyError each
                values = list(zip(*map(tuple, part), strict=True)) if part else [()] * len(columns)
                yield pd.DataFrame({c: _column(v) for c, v in zip(columns, values, strict=True)})


def _column(values: tuple[Any, ...]) -> Any:
    """A database column as pandas would read it (``coerce_float``: decimals as floats)."""
    series = pd.Series(values)
    if series.dtype == object:
        numbers = pd.to_numeric(series, errors="coerce") if any(isinstance(v, Decimal) for v in values) else None
        if numbers is not None and not (numbers.isna() & series.notna()).any():
            return numbers
    return series


def open_source(source: Any = None, *, sql: str | None = None, table: str | None = None, con: Any = None) -> Source:
    """The source the user named: a DataFrame, a file path, ``sql=`` or ``table=`` with ``con=``."""
    if sum(x is not None for x in (source, sql, table)) != 1:
        raise UsageError(
            "name one source: a DataFrame or file path, sql='SELECT …' or table='…' (with con=)",
            hint="e.g. dep.score('customers.parquet', into='scores.parquet', key='customer_id')",
        )
    if sql is not None or table is not None:
        if con is None:
            raise UsageError("sql= and table= need con=: a database URL, an SQLite file, an Engine or a Connection")
        return SqlSource(db.engine_for(con), sql=sql, table=table)
    if isinstance(source, pd.DataFrame):
        return FrameSource(source)
    if isinstance(source, (str, Path)):
        if isinstance(source, str) and db.is_url(source):
            raise UsageError(
                f"{source!r} is a database: say what to read from it",
                hint="pass table='customers' or sql='SELECT …' with con= that URL",
            )
        path = Path(source).expanduser()
        kind = file_kind(path)
        if not path.exists():
            raise UsageError(f"no such file: {path}")
        return ParquetSource(path) if kind == "parquet" else CsvSource(path)
    if type(source).__module__.startswith("polars"):
        raise UsageError("a polars frame: pass frame.to_pandas(), or write it to Parquet and score the file")
    raise UsageError(
        f"cannot score a {type(source).__name__}",
        hint="pass a DataFrame, a .parquet or .csv path, or sql=/table= with con=",
    )


def file_kind(path: Path) -> str:
    """``parquet`` or ``csv`` from the file name (a folder: Parquet files in it)."""
    suffixes = [s for s in path.suffixes if s not in _COMPRESSED]
    kind = FILE_KINDS.get(suffixes[-1].lower()) if suffixes else None
    if kind is None and path.is_dir():
        return "parquet"
    if kind is None:
        raise UsageError(
            f"cannot tell the format of {path.name}",
            hint=f"name it with one of {', '.join(FILE_KINDS)} (CSV may be compressed: .csv.gz)",
        )
    return kind
