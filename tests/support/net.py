"""This machine's address, where the local cluster's pods reach the tests' servers."""

from __future__ import annotations


def host_ip() -> str:
    """This machine's own address on its default route (the local cluster's node address): pods reach servers of
    the tests there, not on loopback. 127.0.0.1 where there is none."""
    from localkube.node import host_ip as node_ip

    return node_ip(fallback="127.0.0.1")


