"""Identifiers: time-ordered task ids, lease tokens and worker ids."""

import os
import secrets
import socket
import time
import uuid


def uuid7() -> uuid.UUID:
    """Return a UUID version 7: a millisecond timestamp, then random bits.

    Ids sent later sort later, which keeps the primary key index compact and
    makes ``id`` a useful tie-breaker in the claim order.
    """
    timestamp_ms = time.time_ns() // 1_000_000
    random_bits = int.from_bytes(secrets.token_bytes(10), "big")
    value = (timestamp_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (random_bits >> 68) << 64  # 12 bits of rand_a
    value |= 0b10 << 62
    value |= random_bits & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def new_lease_token() -> uuid.UUID:
    return uuid.uuid4()


def new_worker_id() -> str:
    """Return an id unique to this process start: host, pid, random suffix."""
    host = socket.gethostname().split(".")[0][:100]
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"
