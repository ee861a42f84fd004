"""A local S3 endpoint for the tests and the scale-out benchmark: moto's server in its own process on the loopback.

``S3Server.start()`` runs ``python -m moto.server -H 127.0.0.1 -p <free port>``, waits until it answers, and keeps its
request log (one line per request, werkzeug's access log) so callers can count requests by method. ``env()`` gives
the standard AWS variables that point a client at it — the lake reads nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

_REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/[\d.]+" (\d+)')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's S3 server in a child process; ``stop()`` ends it (only that process)."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._own_dir = None if log_dir else tempfile.mkdtemp(prefix="cmdlog-moto-")  # removed by stop()
        self.log_path = Path(log_dir or self._own_dir) / "moto.log"
        self._proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 30.0) -> S3Server:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 — open while the server runs
        self._proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                      stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2):
                    return self
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not start: {self.log_path.read_text()[-2000:]}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log is not None:
            self._log.close()
        if self._own_dir:
            shutil.rmtree(self._own_dir, ignore_errors=True)

    def env(self) -> dict[str, str]:
        """The AWS variables a client needs for this endpoint (moto accepts any key)."""
        return {"AWS_ACCESS_KEY_ID": "cmdlog-test", "AWS_SECRET_ACCESS_KEY": "cmdlog-test-secret",
                "AWS_ENDPOINT_URL": self.url, "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def create_bucket(self, name: str) -> None:
        import boto3  # noqa: PLC0415

        env = self.env()
        boto3.client("s3", endpoint_url=self.url, region_name=env["AWS_REGION"],
                     aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=name)

    def mark(self) -> int:
        """A position in the request log; ``requests(since=mark)`` counts what came after it."""
        self._log.flush() if self._log else None
        return self.log_path.stat().st_size

    def requests(self, since: int = 0) -> Counter:
        """Requests the server answered after ``since`` (from ``mark()``), by method (``HEAD``, ``GET``, …)."""
        return Counter(method for method, _ in self.request_log(since))

    def request_log(self, since: int = 0) -> list[tuple[str, str]]:
        """``(method, decoded path)`` of each request answered after ``since``, in order."""
        time.sleep(0.05)  # the server writes its log line after the response
        with open(self.log_path, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        return [(m.group(1), unquote(m.group(2))) for m in _REQUEST.finditer(text)
                if not m.group(2).startswith("/moto-api")]


def apply_env(server: S3Server) -> dict[str, str | None]:
    """Point this process's AWS variables at ``server``; the previous values, for ``restore_env``."""
    old = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    return old


def restore_env(old: dict[str, str | None]) -> None:
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
