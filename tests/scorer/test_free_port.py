"""The tests' free_port: the e2e stack once started two servers on one port (the kernel's
bind(0) choice repeats ports, and client sockets take theirs from the same ephemeral range)."""

from __future__ import annotations

import random
import socket

from tests.support import PORT_RANGE, free_port


def _ephemeral_range() -> tuple[int, int]:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = f.read().split()
    return int(low), int(high)


def test_free_port_never_hands_out_a_port_twice_and_stays_off_the_ephemeral_range():
    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)
    assert not any(low <= p <= high for p in ports)
    assert all(1024 <= p < 65536 for p in ports)


def test_free_port_skips_a_port_in_use():
    taken = []
    try:
        for port in random.Random(1).sample(PORT_RANGE, 400):  # occupied by someone else
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            s.listen()
            taken.append(s)
        busy = {s.getsockname()[1] for s in taken}
        assert not busy & {free_port() for _ in range(500)}
    finally:
        for s in taken:
            s.close()
