"""The audit log's Merkle tree, as RFC 9162 (Certificate Transparency 2.0) section 2.1 has it.

Pure: no I/O. The tree lives in the caller's storage as the hashes of its *perfect*
(complete) subtrees: node ``(level, index)`` is the hash of the perfect subtree over leaves
``[index * 2**level, (index + 1) * 2**level)``, level 0 being the leaf hashes. Every function
here that needs stored hashes takes ``get_node(level, index) -> bytes`` and only ever asks it
for perfect subtrees lying wholly inside the tree of the size in question; the non-perfect
right edge of a tree is combined from perfect ones here.

Hashing (RFC 9162 2.1.1, SHA-256): a leaf is ``SHA-256(0x00 || entry)``, an interior node
``SHA-256(0x01 || left || right)``, the empty tree ``SHA-256("")``.

Arguments that can never make sense (negative numbers, an index outside the tree, a first
size past the second, sizes beyond 2**63) raise ``ValueError``; arguments of the wrong type
raise ``TypeError``; a ``get_node`` that answers no 32-byte hash raises ``LookupError`` (a
storage fault, not the asker's). The verifiers answer ``False`` for anything RFC 9162 says
fails verification, including an index outside the claimed tree and a first size past the
second.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from hashlib import sha256
from itertools import chain

__all__ = [
    "EMPTY_ROOT", "HASH_SIZE", "MAX_SIZE", "Frontier", "consistency_path", "inclusion_path",
    "leaf_hash", "node_hash", "root", "verify_consistency", "verify_inclusion",
]

HASH_SIZE = 32
MAX_SIZE = 1 << 63      # the largest tree size accepted
EMPTY_ROOT = sha256(b"").digest()

GetNode = Callable[[int, int], bytes]
_END = object()


def leaf_hash(entry: bytes) -> bytes:
    """MTH of a one-entry tree: SHA-256(0x00 || entry)."""
    return sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """An interior node: SHA-256(0x01 || left || right)."""
    return sha256(b"\x01" + left + right).digest()


# -- argument checks ------------------------------------------------------------------------

def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must not be negative (got {value})")
    if value > MAX_SIZE:
        raise ValueError(f"{what} must not exceed 2**63 (got {value})")
    return value


def _hash_arg(value: object, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    value = bytes(value)
    if len(value) != HASH_SIZE:
        raise ValueError(f"{what} must be {HASH_SIZE} bytes (got {len(value)})")
    return value


def _fetch(get_node: GetNode, level: int, index: int) -> bytes:
    value = get_node(level, index)
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise LookupError(f"get_node({level}, {index}) answered no {HASH_SIZE}-byte hash")
    return value


def _hash_or_none(value: object) -> bytes | None:
    """A verifier's view of a hash it was handed: 32 bytes, or nothing that can verify."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
        if len(value) == HASH_SIZE:
            return value
    return None


# -- tree hash ------------------------------------------------------------------------------

def root(leaves: Iterable[bytes]) -> bytes:
    """MTH(D[n]) of the tree whose leaf HASHES (not entries) are ``leaves``, in O(n)."""
    tree = Frontier()
    for leaf in leaves:
        tree._push(_hash_arg(leaf, "leaf hash"))
    return tree.root()


class Frontier:
    """The compact state of a tree of ``size`` leaves: the hashes of its maximal perfect
    subtrees, one per set bit of ``size``, left (largest) to right (smallest). Enough to
    append leaves and to answer the root, in O(log n) memory."""

    __slots__ = ("_size", "_hashes")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()):
        size = _count(size, "size")
        hashes = [_hash_arg(h, "frontier hash") for h in hashes]
        if len(hashes) != size.bit_count():
            raise ValueError(f"a tree of size {size} has {size.bit_count()} frontier hashes, "
                             f"not {len(hashes)}")
        self._size = size
        self._hashes = hashes

    @classmethod
    def from_nodes(cls, size: int, get_node: GetNode) -> Frontier:
        """The frontier of the stored tree of ``size`` leaves: one ``get_node`` per set bit."""
        size = _count(size, "size")
        hashes, start = [], 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                hashes.append(_fetch(get_node, level, start >> level))
                start += 1 << level
        return cls(size, hashes)

    @property
    def size(self) -> int:
        """How many leaves the tree holds."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The maximal perfect subtrees' hashes, largest (leftmost) first."""
        return tuple(self._hashes)

    def _push(self, value: bytes) -> None:
        index, hashes = self._size, self._hashes
        while index & 1:
            value = node_hash(hashes.pop(), value)
            index >>= 1
        hashes.append(value)
        self._size += 1

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf (its hash); answer every node this completed, as ``(level, index,
        hash)``, bottom up: the leaf itself ``(0, old size, leaf_hash)`` first, then each
        perfect subtree it closed."""
        value = _hash_arg(leaf_hash, "leaf hash")
        index = self._size
        if index >= MAX_SIZE:
            raise ValueError("the tree is full (2**63 leaves)")
        hashes = self._hashes
        completed = [(0, index, value)]
        level = 0
        while index & 1:
            value = node_hash(hashes.pop(), value)
            index >>= 1
            level += 1
            completed.append((level, index, value))
        hashes.append(value)
        self._size += 1
        return completed

    def root(self) -> bytes:
        """MTH of the tree as it stands (EMPTY_ROOT when it has no leaves)."""
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        value = hashes[-1]
        for left in reversed(hashes[:-1]):
            value = node_hash(left, value)
        return value

    def __repr__(self) -> str:
        return f"Frontier(size={self._size}, root={self.root().hex()[:16]}...)"


# -- proofs from stored nodes ---------------------------------------------------------------

def _edge(level: int, index: int, size: int, get_node: GetNode) -> bytes:
    """MTH(D[index << level : size]) for the last node of ``level`` (not perfect): the
    right fold of the perfect subtrees that cover it, largest first."""
    start = index << level
    width = size - start
    parts = []
    for bit in range(width.bit_length() - 1, -1, -1):
        if width >> bit & 1:
            parts.append(_fetch(get_node, bit, start >> bit))
            start += 1 << bit
    value = parts[-1]
    for left in reversed(parts[:-1]):
        value = node_hash(left, value)
    return value


def _path(level: int, index: int, size: int, get_node: GetNode) -> list[bytes]:
    """The siblings, bottom up, of node ``(level, index)`` on its way to the root of the
    tree of ``size`` leaves. A last node with no sibling rises a level as it is (that is
    RFC 9162's split at the largest power of two below the width); a sibling that is the
    non-perfect right edge is folded from perfect subtrees."""
    path = []
    last = (size - 1) >> level
    while last:
        sibling = index ^ 1
        if sibling < last or (sibling == last and (sibling + 1) << level <= size):
            path.append(_fetch(get_node, level, sibling))
        elif sibling == last:
            path.append(_edge(level, sibling, size, get_node))
        index >>= 1
        last >>= 1
        level += 1
    return path


def inclusion_path(leaf_index: int, tree_size: int, get_node: GetNode) -> list[bytes]:
    """RFC 9162 PATH(leaf_index, D[tree_size]), bottom up; O(log n) ``get_node`` calls."""
    leaf_index = _count(leaf_index, "leaf_index")
    tree_size = _count(tree_size, "tree_size")
    if leaf_index >= tree_size:
        raise ValueError(f"leaf_index {leaf_index} is not in a tree of size {tree_size}")
    return _path(0, leaf_index, tree_size, get_node)


def consistency_path(first: int, second: int, get_node: GetNode) -> list[bytes]:
    """RFC 9162 PROOF(first, D[second]); empty when ``first`` is 0 or equals ``second``."""
    first = _count(first, "first")
    second = _count(second, "second")
    if first > second:
        raise ValueError(f"first size {first} is past second size {second}")
    if first == 0 or first == second:
        return []
    # The largest perfect subtree ending at leaf first - 1 (RFC 9162: SUBPROOF's m == n
    # case is reached there), then its path up the larger tree. It is left out when it is
    # the whole first tree, whose hash the verifier holds.
    level = (first & -first).bit_length() - 1
    index = (first - 1) >> level
    path = _path(level, index, second, get_node)
    if index:
        path.insert(0, _fetch(get_node, level, index))
    return path


# -- verification (RFC 9162 2.1.3.2 and 2.1.4.2) ---------------------------------------------

def verify_inclusion(leaf_index: int, tree_size: int, leaf_hash: bytes,
                     path: Iterable[bytes], root: bytes) -> bool:
    """Whether ``path`` proves ``leaf_hash`` at ``leaf_index`` in the tree of ``tree_size``
    leaves whose root is ``root`` (RFC 9162 2.1.3.2). The size is bound to the tree only
    through ``root``: take both from the same signed checkpoint."""
    leaf_index = _count(leaf_index, "leaf_index")
    tree_size = _count(tree_size, "tree_size")
    r, expected = _hash_or_none(leaf_hash), _hash_or_none(root)
    if r is None or expected is None or leaf_index >= tree_size:
        return False
    fn, sn = leaf_index, tree_size - 1
    for p in path:
        p = _hash_or_none(p)
        if p is None or sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       path: Iterable[bytes]) -> bool:
    """Whether ``path`` proves the tree of ``first`` leaves (root ``first_root``) a prefix
    of the tree of ``second`` leaves (root ``second_root``): RFC 9162 2.1.4.2 for
    0 < first < second. Equal sizes need an empty path and equal roots; a first size of 0
    needs an empty path and the empty tree's root."""
    first = _count(first, "first")
    second = _count(second, "second")
    first_root, second_root = _hash_or_none(first_root), _hash_or_none(second_root)
    if first_root is None or second_root is None or first > second:
        return False
    items = iter(path)              # walked no further than the proof can reach
    head = next(items, _END)
    if first == second:
        return head is _END and first_root == second_root and (
            first > 0 or first_root == EMPTY_ROOT)
    if first == 0:
        return head is _END and first_root == EMPTY_ROOT
    if head is _END:                                                    # step 1
        return False
    if first & (first - 1) == 0:                                        # step 2
        items = chain((head,), items)
        head = first_root
    fn, sn = first - 1, second - 1                                      # step 3
    while fn & 1:                                                       # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = _hash_or_none(head)                                       # step 5
    if fr is None:
        return False
    for c in items:                                                     # step 6
        c = _hash_or_none(c)
        if c is None or sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0          # step 7
