"""The activity channel's seal: only the key's holder makes a payload that opens; tampering, replays and plain text
are refused; the largest payload the publisher packs still fits a NOTIFY once sealed."""

from __future__ import annotations

import base64
import json
import os

import pytest

from commandlog.monitor.channel_seal import PAD, ChannelSeal, UnsealError, sealed_size
from commandlog.monitor.publisher import MAX_PAYLOAD_BYTES, pack

KEY = os.urandom(32)


def test_a_sealed_payload_opens_once_with_the_same_key_and_channel():
    text = json.dumps([{"id": "x", "at": "2026", "tenant_id": "acme"}])
    sealed = ChannelSeal(KEY, channel="cmdlog_activity").seal(text)
    assert "acme" not in sealed
    receiver = ChannelSeal(KEY, channel="cmdlog_activity")
    assert json.loads(receiver.open(sealed)) == json.loads(text)
    with pytest.raises(UnsealError) as e:
        receiver.open(sealed)
    assert e.value.reason == "replayed"
    for other in (ChannelSeal(os.urandom(32), channel="cmdlog_activity"), ChannelSeal(KEY, channel="elsewhere")):
        with pytest.raises(UnsealError) as e:
            other.open(sealed)
        assert e.value.reason == "forged"


def test_tampered_and_unsealed_payloads_are_refused():
    seal = ChannelSeal(KEY, channel="c")
    raw = bytearray(base64.b64decode(seal.seal('[{"id":"x","at":"y"}]')[3:]))
    for i in (0, 11, 12, len(raw) - 1):  # the nonce (sealing time included), the ciphertext, the tag
        tampered = raw.copy()
        tampered[i] ^= 1
        with pytest.raises(UnsealError) as e:
            seal.open("s1." + base64.b64encode(bytes(tampered)).decode())
        assert e.value.reason == "forged"
    for payload in ('[{"id":"x","at":"y"}]', "s1.", "s1.%%%", "s1." + base64.b64encode(b"short").decode()):
        with pytest.raises(UnsealError) as e:
            seal.open(payload)
        assert e.value.reason == "unsealed"


def test_a_payload_sealed_outside_the_window_is_stale():
    seal = ChannelSeal(KEY, channel="c")
    nonce = (0).to_bytes(8, "big") + os.urandom(4)  # sealed at the epoch: far outside any clock's window
    body = seal._aead.encrypt(nonce, b"[]" + b" " * (PAD - 2), b"c")
    with pytest.raises(UnsealError) as e:
        seal.open("s1." + base64.b64encode(nonce + body).decode())
    assert e.value.reason == "stale"


def test_lengths_are_padded_and_the_largest_packed_payload_fits_a_notify():
    seal = ChannelSeal(KEY, channel="c")
    assert len(seal.seal("[]")) == len(seal.seal("[" + "1," * 200 + "1]")) == sealed_size(1)
    assert sealed_size(MAX_PAYLOAD_BYTES) < 8000  # Postgres refuses NOTIFY payloads of 8000 bytes or more
    items = [{"kind": "command", "id": str(n), "at": "2026", "tenant_id": "t", "subjects": ["é" * 40] * 20}
             for n in range(40)]
    for payload in pack(items):
        assert len(seal.seal(payload)) == sealed_size(len(payload.encode())) < 8000
