"""Consistent hashing: :class:`HashRing` pins keys (sequence ids) to nodes (servers).

Each node owns ``vnodes`` points on a 64-bit ring; a key belongs to the first point at or
after its own hash. Adding a node to ``N`` moves about ``1/(N+1)`` of the keys, all of them
to the new node; removing one moves only the keys it held. Hashes are BLAKE2b, so every
process (and every run) maps a key to the same node.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Hashable, Iterable, Iterator

__all__ = ["HashRing"]


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    """A consistent-hash ring with virtual nodes.

    Args:
        nodes: node names (unique).
        vnodes: points per node; more points spread keys more evenly (the spread of the
            share of each node shrinks as ``1/sqrt(vnodes)``).

    ```python
    ring = HashRing(["a", "b", "c"])
    ring.node_for(42)          # always the same node for 42
    list(ring.nodes_for(42))   # every node, in failover order
    ```
    """

    def __init__(self, nodes: Iterable[str] = (), *, vnodes: int = 256):
        if not isinstance(vnodes, int) or vnodes < 1:
            raise ValueError(f"vnodes must be a positive integer, got {vnodes!r}")
        self.vnodes = vnodes
        self._points: list[int] = []
        self._owners: list[str] = []
        self._nodes: list[str] = []
        for node in nodes:
            self.add(node)

    @property
    def nodes(self) -> list[str]:
        """The nodes, in the order they were added."""
        return list(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node: object) -> bool:
        return node in self._nodes

    def add(self, node: str) -> None:
        """Add ``node`` (its ``vnodes`` points).

        Raises:
            ValueError: the node is already on the ring.
        """
        if node in self._nodes:
            raise ValueError(f"node {node!r} is already on the ring")
        self._nodes.append(node)
        for i in range(self.vnodes):
            point = _hash(f"{node}#{i}")
            at = bisect.bisect_left(self._points, point)
            self._points.insert(at, point)
            self._owners.insert(at, node)

    def remove(self, node: str) -> None:
        """Remove ``node``; its keys move to their next nodes on the ring.

        Raises:
            KeyError: the node is not on the ring.
        """
        if node not in self._nodes:
            raise KeyError(f"node {node!r} is not on the ring (nodes: {', '.join(self._nodes)})")
        self._nodes.remove(node)
        keep = [i for i, owner in enumerate(self._owners) if owner != node]
        self._points = [self._points[i] for i in keep]
        self._owners = [self._owners[i] for i in keep]

    def nodes_for(self, key: Hashable) -> Iterator[str]:
        """Every node once, in the order a key falls back to them: its owner first."""
        if not self._points:
            return
        start = bisect.bisect_left(self._points, _hash(str(key)))
        seen: set[str] = set()
        count = len(self._points)
        for step in range(count):
            owner = self._owners[(start + step) % count]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == len(self._nodes):
                    return

    def node_for(self, key: Hashable, *, exclude: Iterable[str] = ()) -> str:
        """The node that owns ``key``, skipping the nodes in ``exclude``.

        Raises:
            LookupError: the ring is empty, or every node is excluded.
        """
        excluded = set(exclude)
        for node in self.nodes_for(key):
            if node not in excluded:
                return node
        if not self._nodes:
            raise LookupError("the hash ring has no nodes")
        raise LookupError(
            f"every node is excluded ({', '.join(sorted(excluded))}); none can take key {key!r}"
        )
