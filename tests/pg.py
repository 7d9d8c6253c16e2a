"""A private PostgreSQL cluster for tests: ``initdb`` in a fresh folder, the server started and stopped by its PID.

Debian's binaries (``/usr/lib/postgresql/<N>/bin``, installed by ``scripts/postgres-setup.sh``). The server listens
on a Unix socket in its own folder only, so clusters of parallel runs never meet on a port. PostgreSQL refuses to
run as root: as root, the cluster belongs to the ``postgres`` system user and runs as it.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd


def binaries() -> Path:
    """The folder holding initdb and postgres: ``$NBDEPLOY_PG_BIN``, Debian's newest, or the PATH's."""
    if os.environ.get("NBDEPLOY_PG_BIN"):
        return Path(os.environ["NBDEPLOY_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("no PostgreSQL server binaries (initdb): run scripts/postgres-setup.sh")


class Postgres:
    """One cluster; ``url`` is its SQLAlchemy URL (psycopg 3, over the Unix socket)."""

    def __init__(self) -> None:
        self.bin = binaries()
        self.base = Path(tempfile.mkdtemp(prefix="nbdeploy-pg-"))
        self.data = self.base / "data"
        self.process: subprocess.Popen[bytes] | None = None
        root = os.geteuid() == 0
        self._as: dict[str, Any] = {"user": "postgres", "group": "postgres"} if root else {}
        if root:
            shutil.chown(self.base, "postgres", "postgres")
        self.url = f"postgresql+psycopg://postgres@/postgres?host={self.base}"

    def start(self, timeout: float = 60.0) -> Postgres:
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync"]
        initdb += ["-E", "UTF8", "--locale=C"]
        subprocess.run(initdb, check=True, capture_output=True, **self._as)
        server = [str(self.bin / "postgres"), "-D", str(self.data), "-k", str(self.base), "-c", "listen_addresses="]
        # durability is not under test (the client is killed, not the server): skip the fsyncs
        for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=40"):
            server += ["-c", setting]
        log = (self.base / "server.log").open("wb")
        if self._as:
            shutil.chown(self.base / "server.log", "postgres", "postgres")
        self.process = subprocess.Popen(server, stdout=log, stderr=subprocess.STDOUT, **self._as)
        log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.base / 'server.log').read_text()[-2000:]}")
            try:
                with psycopg.connect(host=str(self.base), user="postgres", dbname="postgres", connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # polling the socket until the server accepts, with a deadline

    def stop(self) -> None:
        """Fast shutdown (SIGINT) by PID, SIGKILL if it lingers; the folder removed."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        self.process = None
        shutil.rmtree(self.base, ignore_errors=True)

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(host=str(self.base), user="postgres", dbname="postgres", autocommit=True)

    def load(self, table: str, frame: pd.DataFrame, key: str) -> None:
        """``frame`` as a new table (``key`` its primary key), through COPY: 200k rows in about a second."""
        types = {"i": "BIGINT", "u": "BIGINT", "f": "DOUBLE PRECISION", "b": "BOOLEAN"}
        columns = ", ".join(
            f'"{c}" {types.get(frame[c].dtype.kind, "TEXT")}' + (" PRIMARY KEY" if c == key else "")
            for c in frame.columns
        )
        text = io.StringIO()
        frame.to_csv(text, index=False, header=False)
        with self.connect() as con:
            con.execute(f'DROP TABLE IF EXISTS "{table}"')
            con.execute(f'CREATE TABLE "{table}" ({columns})')
            with con.cursor().copy(f'COPY "{table}" FROM STDIN (FORMAT csv)') as copy:
                copy.write(text.getvalue())

    def scalar(self, sql: str) -> Any:
        with self.connect() as con:
            row = con.execute(sql).fetchone()
        return None if row is None else row[0]


@contextlib.contextmanager
def cluster() -> Any:
    """A started cluster, stopped (by PID) however the block ends."""
    pg = Postgres()
    try:
        yield pg.start()
    finally:
        pg.stop()
