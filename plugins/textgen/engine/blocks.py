"""Bookkeeping of paged KV blocks: free list, reference counts, prefix hashes, LRU eviction."""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict, deque
from collections.abc import Sequence

ROOT_HASH = b""


def block_hash(parent: bytes, tokens: Sequence[int]) -> bytes:
    """Hash of a full block given the hash of everything before it.

    A cryptographic hash (blake2b, 128 bits), so a crafted prompt cannot collide with
    another user's prefix and read its cached keys and values.
    """
    h = hashlib.blake2b(parent, digest_size=16)
    h.update(array("q", tokens).tobytes())
    return h.digest()


class BlockPool:
    """Block ids of one layer group's storage.

    A block is in use (refcount > 0), cached (refcount 0 but its prefix hash is known: it
    may be reused by a later request with the same prefix, and is evicted least recently
    released first), or free. `fresh` collects blocks handed out for the first time: their
    storage is uninitialised and must be zeroed before a forward reads it.
    """

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.free: deque[int] = deque()
        self.untouched = num_blocks  # ids num_blocks - untouched .. num_blocks - 1 were never handed out
        self.refs = [0] * num_blocks
        self.hash_of: dict[int, bytes] = {}
        self.by_hash: dict[bytes, int] = {}
        self.cached: OrderedDict[int, None] = OrderedDict()  # refcount-0 hashed blocks, least recently used first
        self.fresh: list[int] = []

    @property
    def available(self) -> int:
        """Blocks that allocate() can hand out now (free, never used, or evictable)."""
        return len(self.free) + self.untouched + len(self.cached)

    @property
    def used(self) -> int:
        """Blocks referenced by at least one sequence."""
        return self.num_blocks - self.available

    def allocate(self) -> int:
        """A block for new keys/values: a free one, else a never-used one, else the LRU cached one."""
        if self.free:
            block = self.free.popleft()
        elif self.untouched:
            block = self.num_blocks - self.untouched
            self.untouched -= 1
            self.fresh.append(block)
        elif self.cached:
            block, _ = self.cached.popitem(last=False)
            del self.by_hash[self.hash_of.pop(block)]
        else:
            raise RuntimeError("no KV block available (the scheduler checks `available` first)")
        self.refs[block] = 1
        return block

    def lookup(self, digest: bytes) -> int | None:
        """The block holding the prefix block `digest`, if cached or in use."""
        return self.by_hash.get(digest)

    def acquire(self, block: int) -> None:
        """One more sequence reads `block` (a prefix hit)."""
        if self.refs[block] == 0:
            del self.cached[block]
        self.refs[block] += 1

    def release(self, block: int) -> None:
        """A sequence no longer needs `block`; a hashed one stays cached until evicted."""
        self.refs[block] -= 1
        if self.refs[block] == 0:
            if block in self.hash_of:
                self.cached[block] = None
            else:
                self.free.append(block)

    def register(self, block: int, digest: bytes) -> bool:
        """`block` holds (or this step computes) the full prefix block `digest`; later requests may share it.
        False when the digest or the block was already known."""
        if digest in self.by_hash or block in self.hash_of:
            return False
        self.by_hash[digest] = block
        self.hash_of[block] = digest
        return True

    def unregister(self, block: int) -> None:
        """`block` never received the keys/values its hash promised: no request may find it."""
        digest = self.hash_of.pop(block, None)
        if digest is None:
            return
        del self.by_hash[digest]
        if block in self.cached:
            del self.cached[block]
            self.free.append(block)
