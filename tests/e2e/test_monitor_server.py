"""The monitor on a real uvicorn server (its own process, its own LISTEN): a client that stops reading is closed
with 4008 once its queue is full, while a client that keeps reading gets every item."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import psycopg
import pytest

from commandlog.auth.tokens import create_token
from commandlog.monitor.channel_seal import ChannelSeal
from commandlog.monitor.publisher import CHANNEL, stamp
from storage.channel_key import load_key

websockets_sync = pytest.importorskip("websockets.sync.client")


@pytest.fixture(scope="module")
def server(pg_url, tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CMDLOG_DATABASE_URL": pg_url, "CMDLOG_HOME": str(tmp_path_factory.mktemp("home")),
           "CMDLOG_MONITOR_QUEUE": "200"}
    log_path = tmp_path_factory.mktemp("uvicorn") / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "commandlog.web.app:create_app",
                                 "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"uvicorn exited:\n{log_path.read_text()}")
            time.sleep(0.2)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def _raw_socket_client(port: int, token: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then reads nothing (tiny receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall((f"GET /ws/activity HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _frames(data: bytes):
    """(opcode, payload) of the server's (unmasked) frames in ``data``."""
    i = 0
    while i + 2 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if length == 126:
            length, i = struct.unpack(">H", data[i:i + 2])[0], i + 2
        elif length == 127:
            length, i = struct.unpack(">Q", data[i:i + 8])[0], i + 8
        yield opcode, data[i:i + length]
        i += length


def test_a_client_that_stops_reading_is_closed_and_the_others_get_everything(server, db, tenant):
    token = create_token(db, tenant=tenant, role="viewer")
    stuck = _raw_socket_client(server, token)
    healthy = websockets_sync.connect(f"ws://127.0.0.1:{server}/ws/activity", max_size=None,
                                      additional_headers={"Authorization": f"Bearer {token}"})
    assert json.loads(healthy.recv(timeout=10))["type"] == "hello"

    notifications, per, pad = 3000, 8, "p" * 300  # ~11 MB for each client: more than the socket buffers hold
    payloads = [json.dumps([{"kind": "frontend_action", "id": f"{n}-{k}", "at": stamp(dt.datetime.now(dt.UTC)),
                             "tenant_id": tenant, "actor_id": "x", "action": "burst", "subjects": [], "pad": pad}
                            for k in range(per)]) for n in range(notifications)]
    received: set[str] = set()

    def read_all() -> None:
        while len(received) < notifications * per:
            received.update(i["id"] for i in json.loads(healthy.recv(timeout=60)).get("items", []))

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    with psycopg.connect(db.url, autocommit=True) as conn:  # as the platform's writer: sealed with the key
        seal = ChannelSeal(load_key(conn), channel=CHANNEL)
        payloads = [seal.seal(p) for p in payloads]
        for start in range(0, notifications, 500):
            conn.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", (CHANNEL, payloads[start:start + 500]))
    reader.join(timeout=90)
    assert len(received) == notifications * per, "the reading client was held back or lost items"
    healthy.close()

    time.sleep(2)  # the stuck client's queue overflowed long ago; now it reads what was buffered for it
    stuck.settimeout(30)
    data = b""
    while chunk := stuck.recv(1 << 20):
        data += chunk
    stuck.close()
    frames = list(_frames(data))
    items = sum(len(json.loads(p).get("items", [])) for op, p in frames if op == 1)
    assert items < notifications * per
    op, payload = frames[-1]
    assert op == 8 and struct.unpack(">H", payload[:2])[0] == 4008 and b"too slow" in payload
