"""Identifiers: time-ordered task ids, lease tokens and worker ids."""

import os
import secrets
import socket
import threading
import time
import uuid

_uuid7_lock = threading.Lock()
_last_timestamp_ms = 0
_last_sequence = 0

_SEQUENCE_BITS = 12


def uuid7() -> uuid.UUID:
    """Return a UUID version 7: a millisecond timestamp, a counter, random bits.

    Within one process, ids made later sort later, even within a millisecond
    (the 12-bit counter runs on, borrowing from the next millisecond when it
    overflows). That keeps the primary key index compact and makes ``id`` a
    tie-breaker in the claim order that follows the order of sending.
    """
    global _last_timestamp_ms, _last_sequence

    with _uuid7_lock:
        timestamp_ms = time.time_ns() // 1_000_000
        if timestamp_ms > _last_timestamp_ms:
            sequence = secrets.randbits(_SEQUENCE_BITS - 1)
        else:
            timestamp_ms = _last_timestamp_ms
            sequence = _last_sequence + 1
            if sequence >> _SEQUENCE_BITS:
                timestamp_ms += 1
                sequence = 0
        _last_timestamp_ms, _last_sequence = timestamp_ms, sequence

    value = (timestamp_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= sequence << 64
    value |= 0b10 << 62
    value |= secrets.randbits(62)
    return uuid.UUID(int=value)


def new_lease_token() -> uuid.UUID:
    return uuid.uuid4()


def new_worker_id() -> str:
    """Return an id unique to this process start: host, pid, random suffix."""
    host = socket.gethostname().split(".")[0][:100]
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"
