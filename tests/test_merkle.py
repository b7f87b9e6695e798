"""gateway.audit.merkle against RFC 9162 section 2.1.

Three witnesses: reference implementations written here straight from the RFC's recursive
definitions (MTH, PATH, PROOF/SUBPROOF) with their own hashing; pymerkle 7 (an outside Python
implementation, RFC 9162 hashing in its default "security" mode); and the known answers of
the Certificate Transparency / transparency-dev test vectors. pymerkle's inclusion proofs are
RFC 9162's, but its consistency proofs are laid out differently (see the pymerkle tests), so
our consistency proofs meet outside answers in the transparency-dev vectors instead.
"""
from __future__ import annotations

import functools
import hashlib
import random
import time

import pymerkle
import pytest

from gateway.audit import merkle
from gateway.audit.merkle import (
    EMPTY_ROOT, MAX_SIZE, Frontier, consistency_path, inclusion_path, leaf_hash, node_hash,
    root, verify_consistency, verify_inclusion,
)

SMALL = 70          # every size 1..SMALL, every index and every first size
BIG = 3000          # the stored tree the random big sizes are cut from


# -- the reference: RFC 9162 2.1.1, 2.1.3.1 and 2.1.4.1 as written, over one list of entries --

def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


ENTRIES = tuple(f"audit entry {i}".encode() for i in range(BIG))


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@functools.cache
def ref_mth(lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi])."""
    n = hi - lo
    if n == 0:
        return _sha(b"")
    if n == 1:
        return _sha(b"\x00" + ENTRIES[lo])
    k = _k(n)
    return _sha(b"\x01" + ref_mth(lo, lo + k) + ref_mth(lo + k, hi))


def ref_path(m: int, lo: int, hi: int) -> list[bytes]:
    """PATH(m, D[lo:hi])."""
    n = hi - lo
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return ref_path(m, lo, lo + k) + [ref_mth(lo + k, hi)]
    return ref_path(m - k, lo + k, hi) + [ref_mth(lo, lo + k)]


def ref_subproof(m: int, lo: int, hi: int, b: bool) -> list[bytes]:
    """SUBPROOF(m, D[lo:hi], b)."""
    n = hi - lo
    if m == n:
        return [] if b else [ref_mth(lo, hi)]
    k = _k(n)
    if m <= k:
        return ref_subproof(m, lo, lo + k, b) + [ref_mth(lo + k, hi)]
    return ref_subproof(m - k, lo + k, hi, False) + [ref_mth(lo, lo + k)]


def ref_proof(m: int, n: int) -> list[bytes]:
    """PROOF(m, D[n])."""
    return ref_subproof(m, 0, n, True)


def ref_leaf(i: int) -> bytes:
    return ref_mth(i, i + 1)


# -- a stored tree: the nodes Frontier.append reported, behind a checking get_node ----------

class Store:
    """What the sequencer keeps: every node Frontier.append answered, by (level, index)."""

    def __init__(self, count: int):
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.frontiers: list[tuple[int, tuple[bytes, ...]]] = [(0, ())]
        tree = Frontier()
        for i in range(count):
            for level, index, value in tree.append(ref_leaf(i)):
                assert (level, index) not in self.nodes, "a node was reported twice"
                self.nodes[level, index] = value
            self.frontiers.append((tree.size, tree.hashes))

    def reader(self, size: int) -> Reader:
        return Reader(self.nodes, size)


class Reader:
    """get_node for the tree of ``size`` leaves: refuses anything but a perfect subtree wholly
    inside it, and counts the calls."""

    def __init__(self, nodes: dict[tuple[int, int], bytes], size: int):
        self.nodes, self.size, self.calls = nodes, size, 0

    def __call__(self, level: int, index: int) -> bytes:
        self.calls += 1
        assert level >= 0 and index >= 0
        assert (index + 1) << level <= self.size, \
            f"asked for ({level}, {index}), which is not a perfect subtree of size {self.size}"
        return self.nodes[level, index]


@pytest.fixture(scope="module")
def store() -> Store:
    return Store(BIG)


class PeriodicTree:
    """A consistent tree of any size up to 2**63 without storing it: leaf i is the leaf hash
    of entry ``i % 16``, so a perfect subtree of level >= 4 has one hash per level and the
    lower ones depend on the index. get_node checks and counts like Reader."""

    PERIOD_BITS = 4

    def __init__(self):
        period = 1 << self.PERIOD_BITS
        self.low = {(0, i): leaf_hash(b"periodic %d" % i) for i in range(period)}
        for level in range(1, self.PERIOD_BITS + 1):
            for i in range(period >> level):
                self.low[level, i] = node_hash(self.low[level - 1, 2 * i],
                                               self.low[level - 1, 2 * i + 1])
        self.high = [self.low[self.PERIOD_BITS, 0]]
        for _ in range(64):
            self.high.append(node_hash(self.high[-1], self.high[-1]))
        self.size, self.calls = 0, 0

    def leaf(self, i: int) -> bytes:
        return self.low[0, i % (1 << self.PERIOD_BITS)]

    def __call__(self, level: int, index: int) -> bytes:
        self.calls += 1
        assert (index + 1) << level <= self.size, (level, index, self.size)
        if level >= self.PERIOD_BITS:
            return self.high[level - self.PERIOD_BITS]
        return self.low[level, index % (1 << (self.PERIOD_BITS - level))]

    def at(self, size: int) -> PeriodicTree:
        self.size, self.calls = size, 0
        return self

    def root(self, size: int) -> bytes:
        return Frontier.from_nodes(size, self.at(size)).root()


# -- hashing and the tree hash ---------------------------------------------------------------

def test_hashes_carry_rfc9162_domain_prefixes():
    assert leaf_hash(b"abc") == _sha(b"\x00abc")
    assert node_hash(b"L" * 32, b"R" * 32) == _sha(b"\x01" + b"L" * 32 + b"R" * 32)
    assert EMPTY_ROOT == _sha(b"") == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


# Certificate Transparency's reference inputs and the root of the tree over the first n of
# them (certificate-transparency merkle_tree_test; transparency-dev/merkle proof/verify_test.go).
CT_INPUTS = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f")]
CT_ROOTS = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")]


def test_roots_of_the_certificate_transparency_reference_tree():
    leaves = [leaf_hash(e) for e in CT_INPUTS]
    tree = Frontier()
    assert tree.root() == root([]) == EMPTY_ROOT
    for n, expected in enumerate(CT_ROOTS, start=1):
        tree.append(leaves[n - 1])
        assert root(leaves[:n]) == expected
        assert tree.root() == expected


def test_root_equals_the_recursive_mth_for_every_size_up_to_70():
    leaves = [ref_leaf(i) for i in range(SMALL)]
    tree = Frontier()
    for n in range(SMALL + 1):
        assert root(leaves[:n]) == ref_mth(0, n), n
        assert tree.size == n
        assert tree.root() == ref_mth(0, n), n
        if n < SMALL:
            tree.append(leaves[n])


def test_root_refuses_entries_in_place_of_leaf_hashes():
    with pytest.raises(ValueError, match="32 bytes"):
        root([b"an entry, not its hash"])
    with pytest.raises(TypeError):
        root(["a string"])


# -- the frontier --------------------------------------------------------------------------

def test_frontier_holds_the_perfect_subtrees_of_the_size_left_to_right(store):
    for size, hashes in store.frontiers[:SMALL + 1]:
        expected, start = [], 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                expected.append(ref_mth(start, start + (1 << level)))
                start += 1 << level
        assert hashes == tuple(expected), size


def test_append_answers_exactly_the_perfect_subtrees_it_completed():
    tree = Frontier()
    for i in range(SMALL):
        got = tree.append(ref_leaf(i))
        n = i + 1       # the subtrees completed now are those ending at leaf i
        want = [(level, (n >> level) - 1) for level in range(n.bit_length())
                if n % (1 << level) == 0]
        assert [(level, index) for level, index, _ in got] == want, i
        for level, index, value in got:
            assert value == ref_mth(index << level, (index + 1) << level)


def test_every_perfect_subtree_of_the_tree_is_reported_once(store):
    size = 777
    expected = {(level, index) for level in range(size.bit_length())
                for index in range(size >> level)}
    reported = {(level, index) for (level, index) in store.nodes
                if (index + 1) << level <= size}
    assert reported == expected
    for level, index in [(0, 0), (3, 17), (9, 0), (5, 23)]:
        assert store.nodes[level, index] == ref_mth(index << level, (index + 1) << level)


def test_from_nodes_rebuilds_the_frontier_with_one_read_per_set_bit(store):
    for size, hashes in store.frontiers[:200]:
        reader = store.reader(size)
        rebuilt = Frontier.from_nodes(size, reader)
        assert rebuilt.size == size
        assert rebuilt.hashes == hashes
        assert rebuilt.root() == ref_mth(0, size)
        assert reader.calls == size.bit_count()


def test_a_rebuilt_frontier_goes_on_as_if_it_had_never_stopped(store):
    for size in (0, 1, 5, 64, 97):
        tree = Frontier.from_nodes(size, store.reader(size))
        for i in range(size, size + 40):
            for level, index, value in tree.append(ref_leaf(i)):
                assert store.nodes[level, index] == value
            assert tree.root() == ref_mth(0, i + 1)


def test_frontier_refuses_a_state_that_does_not_fit_its_size():
    with pytest.raises(ValueError, match="3 has 2 frontier hashes"):
        Frontier(3, [EMPTY_ROOT])
    with pytest.raises(ValueError, match="negative"):
        Frontier.from_nodes(-1, lambda level, index: EMPTY_ROOT)
    with pytest.raises(ValueError, match="2\\*\\*63"):
        Frontier.from_nodes(MAX_SIZE + 1, lambda level, index: EMPTY_ROOT)
    with pytest.raises(ValueError, match="32 bytes"):
        Frontier().append(b"short")
    with pytest.raises(TypeError):
        Frontier(True)


def test_a_full_tree_of_2_63_leaves_takes_no_more():
    tree = Frontier.from_nodes(MAX_SIZE, lambda level, index: EMPTY_ROOT)
    assert tree.hashes == (EMPTY_ROOT,)
    with pytest.raises(ValueError, match="full"):
        tree.append(EMPTY_ROOT)


def test_a_missing_stored_node_is_a_lookup_error_not_a_bad_request():
    with pytest.raises(LookupError, match=r"get_node\(1, 0\)"):
        Frontier.from_nodes(2, lambda level, index: None)
    with pytest.raises(LookupError):
        inclusion_path(0, 4, lambda level, index: b"too short")


def test_appending_100k_leaves_is_quick():
    leaves = [_sha(b"%d" % i) for i in range(100_000)]
    tree = Frontier()
    started = time.perf_counter()
    for value in leaves:
        tree.append(value)
    appended = time.perf_counter() - started
    started = time.perf_counter()
    whole = root(leaves)
    rooted = time.perf_counter() - started
    assert tree.root() == whole
    assert appended < 1.5, f"100k appends took {appended:.2f} s"
    assert rooted < 1.5, f"root of 100k leaves took {rooted:.2f} s"


# -- proofs from stored nodes --------------------------------------------------------------

def test_inclusion_path_is_rfc9162_path_for_every_index_of_every_size_up_to_70(store):
    for n in range(1, SMALL + 1):
        for m in range(n):
            assert inclusion_path(m, n, store.reader(n)) == ref_path(m, 0, n), (m, n)


def test_consistency_path_is_rfc9162_proof_for_every_pair_of_sizes_up_to_70(store):
    for n in range(1, SMALL + 1):
        assert consistency_path(0, n, store.reader(n)) == []
        for m in range(1, n + 1):
            assert consistency_path(m, n, store.reader(n)) == ref_proof(m, n), (m, n)


def test_proofs_for_random_big_sizes_match_the_reference_and_verify(store):
    rng = random.Random(9162)
    for _ in range(150):
        n = rng.randint(SMALL, BIG)
        m = rng.randrange(n)
        first = rng.randint(1, n)
        path = inclusion_path(m, n, store.reader(n))
        assert path == ref_path(m, 0, n), (m, n)
        assert verify_inclusion(m, n, ref_leaf(m), path, ref_mth(0, n))
        proof = consistency_path(first, n, store.reader(n))
        assert proof == ref_proof(first, n), (first, n)
        assert verify_consistency(first, n, ref_mth(0, first), ref_mth(0, n), proof)


def _log_bound(size: int) -> int:
    return 2 * size.bit_length() + 1


def test_proofs_ask_get_node_a_logarithmic_number_of_times(store):
    for n in list(range(1, SMALL + 1)) + [1023, 1024, 1025, 2047, 2999, BIG]:
        for m in {0, n // 3, n // 2, n - 2, n - 1} - {-1}:
            reader = store.reader(n)
            path = inclusion_path(m, n, reader)
            assert reader.calls <= _log_bound(n), (m, n, reader.calls)
            assert reader.calls >= len(path)
            if m:
                reader = store.reader(n)
                consistency_path(m, n, reader)
                assert reader.calls <= _log_bound(n), (m, n, reader.calls)
    # leaf 0 of 3000: eleven perfect siblings, then the ragged right edge [2048, 3000)
    # folded from its perfect parts; nothing else is read
    reader = store.reader(BIG)
    inclusion_path(0, BIG, reader)
    assert reader.calls == (BIG - 2048).bit_count() + 11


def test_proofs_in_trees_near_2_63_leaves_verify_with_few_reads():
    tree = PeriodicTree()
    rng = random.Random(63)
    sizes = [MAX_SIZE, MAX_SIZE - 1, (1 << 62) + 12345] + \
        [rng.randint(2, MAX_SIZE) for _ in range(40)]
    for n in sizes:
        top = tree.root(n)
        for m in (0, n - 1, rng.randrange(n)):
            path = inclusion_path(m, n, tree.at(n))
            assert tree.calls <= _log_bound(n)
            assert verify_inclusion(m, n, tree.leaf(m), path, top), (m, n)
            assert not verify_inclusion(m, n, tree.leaf(m + 1), path, top), (m, n)
        first = rng.randint(1, n - 1)
        proof = consistency_path(first, n, tree.at(n))
        assert tree.calls <= _log_bound(n)
        assert verify_consistency(first, n, tree.root(first), top, proof), (first, n)


def test_proof_requests_that_cannot_be_answered_are_value_errors():
    never = lambda level, index: pytest.fail("no read expected")  # noqa: E731
    for args in [(-1, 5), (5, 5), (6, 5), (0, 0), (0, MAX_SIZE + 1)]:
        with pytest.raises(ValueError):
            inclusion_path(*args, never)
    for args in [(6, 5), (-1, 5), (1, -1), (1, MAX_SIZE + 1)]:
        with pytest.raises(ValueError):
            consistency_path(*args, never)
    for bad in (1.0, "3", None, True):
        with pytest.raises(TypeError):
            inclusion_path(bad, 5, never)
        with pytest.raises(TypeError):
            consistency_path(1, bad, never)
    assert consistency_path(5, 5, never) == []
    assert consistency_path(0, 5, never) == []
    assert consistency_path(0, 0, never) == []


def test_the_message_names_the_impossible_argument():
    never = lambda level, index: b""  # noqa: E731
    with pytest.raises(ValueError, match="leaf_index 7 is not in a tree of size 7"):
        inclusion_path(7, 7, never)
    with pytest.raises(ValueError, match="first size 9 is past second size 8"):
        consistency_path(9, 8, never)
    with pytest.raises(ValueError, match="leaf_index must not be negative"):
        inclusion_path(-3, 8, never)


# -- the verifiers: everything valid accepted ----------------------------------------------

def test_verify_inclusion_accepts_every_rfc_path_up_to_70():
    for n in range(1, SMALL + 1):
        for m in range(n):
            assert verify_inclusion(m, n, ref_leaf(m), ref_path(m, 0, n), ref_mth(0, n)), (m, n)


def test_verify_consistency_accepts_every_rfc_proof_up_to_70():
    for n in range(1, SMALL + 1):
        for m in range(1, n + 1):
            assert verify_consistency(m, n, ref_mth(0, m), ref_mth(0, n), ref_proof(m, n)), (m, n)


def test_the_edge_cases_rfc9162_allows():
    one = ref_leaf(0)
    assert verify_inclusion(0, 1, one, [], one)                 # a one-leaf tree: empty path
    assert verify_consistency(1, 1, one, one, [])               # first == second
    assert verify_consistency(33, 33, ref_mth(0, 33), ref_mth(0, 33), [])
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 9, EMPTY_ROOT, ref_mth(0, 9), [])
    # first a power of two: its own hash is left out of the proof and the verifier
    # puts first_hash in front (RFC 9162 2.1.4.2 step 2)
    assert ref_proof(4, 8) == [ref_mth(4, 8)]
    assert verify_consistency(4, 8, ref_mth(0, 4), ref_mth(0, 8), [ref_mth(4, 8)])
    assert verify_consistency(1, 2, one, ref_mth(0, 2), [ref_leaf(1)])
    assert verify_consistency(16, 17, ref_mth(0, 16), ref_mth(0, 17), [ref_leaf(16)])


# -- the verifiers: everything else refused ------------------------------------------------

SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _tampered(path: list[bytes]):
    """(what, path) for every way of spoiling a path (after transparency-dev's probes)."""
    yield "empty", []
    yield "trailing hash", path + [SOME_HASH]
    yield "preceding hash", [SOME_HASH] + path
    yield "trailing garbage", path + [b""]
    yield "preceding garbage", [b""] + path
    for i in range(len(path)):
        yield f"bit 3 of [{i}][0] flipped", \
            path[:i] + [bytes([path[i][0] ^ 8]) + path[i][1:]] + path[i + 1:]
        yield f"bit 0 of [{i}][31] flipped", \
            path[:i] + [path[i][:31] + bytes([path[i][31] ^ 1])] + path[i + 1:]
        yield f"[{i}] dropped", path[:i] + path[i + 1:]
        yield f"[{i}] doubled", path[:i + 1] + path[i:]
        yield f"[{i}] 31 bytes", path[:i] + [path[i][:31]] + path[i + 1:]
        yield f"[{i}] as a str", path[:i] + [path[i].hex()] + path[i + 1:]
        if i + 1 < len(path) and path[i] != path[i + 1]:
            yield f"[{i}] and [{i + 1}] swapped", \
                path[:i] + [path[i + 1], path[i]] + path[i + 2:]


def test_verify_inclusion_refuses_tampered_paths_and_wrong_claims():
    for n in range(1, 41):
        top = ref_mth(0, n)
        for m in range(n):
            path, leaf = ref_path(m, 0, n), ref_leaf(m)
            for what, spoiled in _tampered(path):
                if what == "empty" and n == 1:
                    continue        # the one-leaf tree's path is empty
                assert not verify_inclusion(m, n, leaf, spoiled, top), (m, n, what)
            for other in {m - 1, m + 1, m ^ 1, m ^ 2, n, n + 5} - {m, -1}:
                assert not verify_inclusion(other, n, leaf, path, top), (m, n, other)
            for other in {n - 1, n + 1, 2 * n, n // 2} - {n, 0}:
                assert not verify_inclusion(m, other, leaf, path, ref_mth(0, other)), (m, n, other)
            for wrong in {ref_leaf(m ^ 1), top, EMPTY_ROOT, SOME_HASH, leaf[:31]} - {leaf}:
                assert not verify_inclusion(m, n, wrong, path, top), (m, n)
            for wrong in {ref_mth(0, n - 1), ref_mth(0, n + 1), EMPTY_ROOT, SOME_HASH,
                          top[:31], top.hex()} - {top}:
                assert not verify_inclusion(m, n, leaf, path, wrong), (m, n)


def test_verify_consistency_refuses_tampered_paths_and_wrong_claims():
    for n in range(2, 41):
        second = ref_mth(0, n)
        for m in range(1, n):
            proof, first = ref_proof(m, n), ref_mth(0, m)
            for what, spoiled in _tampered(proof):
                assert not verify_consistency(m, n, first, second, spoiled), (m, n, what)
            for other in {m - 1, m + 1, m ^ 1, m ^ 2} - {m, 0, n}:
                if other < n:
                    assert not verify_consistency(other, n, ref_mth(0, other), second, proof), \
                        (m, n, other)
                assert not verify_consistency(other, n, first, second, proof), (m, n, other)
            for other in {n - 1, n + 1, 2 * n} - {n, m}:
                assert not verify_consistency(m, other, first, ref_mth(0, other), proof), \
                    (m, n, other)
            assert not verify_consistency(n, m, second, first, proof), (m, n)   # swapped order
            assert not verify_consistency(m, n, second, first, proof), (m, n)   # swapped roots
            for wrong in (EMPTY_ROOT, SOME_HASH, ref_mth(0, m - 1), ref_mth(0, m + 1),
                          first[:31], first.hex()):
                assert not verify_consistency(m, n, wrong, second, proof), (m, n)
            for wrong in (EMPTY_ROOT, SOME_HASH, ref_mth(0, n - 1), ref_mth(0, n + 1),
                          second[:31], second.hex()):
                assert not verify_consistency(m, n, first, wrong, proof), (m, n)


def test_equal_and_empty_sizes_need_an_empty_proof_and_matching_roots():
    r5, r6 = ref_mth(0, 5), ref_mth(0, 6)
    assert not verify_consistency(5, 5, r5, r6, [])
    assert not verify_consistency(5, 5, r5, r5, [r5])
    assert not verify_consistency(0, 5, EMPTY_ROOT, r5, [r5])
    assert not verify_consistency(0, 5, r5, r5, [])             # not the empty tree's hash
    assert not verify_consistency(0, 0, r5, r5, [])
    assert not verify_consistency(1, 2, ref_leaf(0), ref_mth(0, 2), [])   # one is needed
    assert not verify_inclusion(0, 2, ref_leaf(0), [], ref_mth(0, 2))
    assert not verify_inclusion(0, 0, EMPTY_ROOT, [], EMPTY_ROOT)


def test_hashes_of_the_wrong_length_never_verify_even_when_they_agree():
    short = ref_leaf(0)[:31]
    assert not verify_inclusion(0, 1, short, [], short)
    assert not verify_consistency(1, 1, short, short, [])
    assert not verify_consistency(1, 2, short, node_hash(short, ref_leaf(1)), [ref_leaf(1)])


def test_inclusion_binds_the_tree_size_only_through_the_root():
    """RFC 9162's verifier checks the size only through the shape of the path: a path for
    leaf 0 in the tree of 3 also "verifies" for a claimed size of 4 against the root of 3.
    So a caller takes the size and the root from the same signed checkpoint."""
    path = ref_path(0, 0, 3)
    assert verify_inclusion(0, 4, ref_leaf(0), path, ref_mth(0, 3))
    assert not verify_inclusion(0, 4, ref_leaf(0), path, ref_mth(0, 4))


def test_verifiers_raise_for_arguments_no_tree_can_have():
    leaf = ref_leaf(0)
    for index, size in [(-1, 5), (0, -5), (0, MAX_SIZE + 1)]:
        with pytest.raises(ValueError):
            verify_inclusion(index, size, leaf, [], leaf)
    for first, second in [(-1, 5), (1, -1), (1, MAX_SIZE + 1)]:
        with pytest.raises(ValueError):
            verify_consistency(first, second, leaf, leaf, [])
    with pytest.raises(TypeError):
        verify_inclusion("0", 1, leaf, [], leaf)
    # claims that are merely false are answered, as RFC 9162 says, by failing
    assert verify_inclusion(5, 5, leaf, [], leaf) is False
    assert verify_consistency(6, 5, leaf, leaf, []) is False


def _bounded(path: list[bytes], extra: int = 1):
    """The path, then one more hash, then a failure: a verifier must stop by itself."""
    yield from path
    for _ in range(extra):
        yield SOME_HASH
    pytest.fail("the verifier walked past the end of any possible proof")


def test_overlong_paths_are_refused_without_walking_them():
    top = ref_mth(0, 5)
    assert not verify_inclusion(2, 5, ref_leaf(2), _bounded(ref_path(2, 0, 5)), top)
    assert not verify_consistency(3, 5, ref_mth(0, 3), top, _bounded(ref_proof(3, 5)))
    assert not verify_consistency(4, 5, ref_mth(0, 4), top, _bounded(ref_proof(4, 5)))
    assert not verify_consistency(5, 5, top, top, _bounded([], extra=1))
    assert not verify_consistency(0, 5, EMPTY_ROOT, top, _bounded([], extra=1))
    # the whole of a valid proof is read, and it verifies
    assert verify_inclusion(2, 5, ref_leaf(2), iter(ref_path(2, 0, 5)), top)
    assert verify_consistency(3, 5, ref_mth(0, 3), top, iter(ref_proof(3, 5)))


def test_a_first_size_past_the_second_is_refused_even_if_the_hashes_chain():
    """RFC 9162 2.1.4.2 presumes first < second; its loop alone would accept this crafted
    claim that a tree of 3 is a prefix of a tree of 2."""
    a, x = SOME_HASH, EMPTY_ROOT
    assert not verify_consistency(3, 2, a, node_hash(a, x), [a, x])


def test_a_none_in_a_proof_is_not_an_empty_proof():
    r5 = ref_mth(0, 5)
    assert not verify_consistency(5, 5, r5, r5, [None])
    assert not verify_consistency(0, 5, EMPTY_ROOT, r5, [None])
    assert not verify_inclusion(0, 1, ref_leaf(0), [None], ref_leaf(0))


# -- outside witnesses -----------------------------------------------------------------------

def _dh(*hexes: str) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


# transparency-dev/merkle proof/verify_test.go, over CT_INPUTS (leaf numbers there are 1-based,
# here 0-based indices).
GO_INCLUSION = [
    (0, 1, []),
    (0, 8, _dh("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
               "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
               "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (5, 8, _dh("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
               "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
               "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 3, _dh("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (1, 5, _dh("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
               "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
               "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
]
GO_CONSISTENCY = [
    (1, 1, []),
    (1, 8, _dh("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
               "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
               "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (6, 8, _dh("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
               "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
               "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 5, _dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
               "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
    (6, 7, _dh("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
               "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
               "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
]


def _ct_store() -> dict[tuple[int, int], bytes]:
    nodes, tree = {}, Frontier()
    for entry in CT_INPUTS:
        for level, index, value in tree.append(leaf_hash(entry)):
            nodes[level, index] = value
    return nodes


@pytest.mark.parametrize("index, size, expected", GO_INCLUSION)
def test_inclusion_paths_match_the_transparency_dev_vectors(index, size, expected):
    assert inclusion_path(index, size, Reader(_ct_store(), size)) == expected
    assert verify_inclusion(index, size, leaf_hash(CT_INPUTS[index]), expected,
                            CT_ROOTS[size - 1])


@pytest.mark.parametrize("first, second, expected", GO_CONSISTENCY)
def test_consistency_paths_match_the_transparency_dev_vectors(first, second, expected):
    assert consistency_path(first, second, Reader(_ct_store(), second)) == expected
    assert verify_consistency(first, second, CT_ROOTS[first - 1], CT_ROOTS[second - 1],
                              expected)


def _pymerkle_tree(count: int) -> pymerkle.InmemoryTree:
    tree = pymerkle.InmemoryTree(algorithm="sha256")     # security mode: 0x00 / 0x01 prefixes
    for i in range(count):
        tree.append_entry(ENTRIES[i])
    return tree


def test_pymerkle_hashes_as_rfc9162_does():
    hasher = pymerkle.InmemoryTree(algorithm="sha256")
    assert hasher.security
    assert (hasher.leaf_prefix, hasher.node_prefix) == (b"\x00", b"\x01")
    assert hasher.hash_empty() == EMPTY_ROOT
    assert hasher.hash_buff(b"x") == leaf_hash(b"x")
    assert hasher.hash_pair(b"a" * 32, b"b" * 32) == node_hash(b"a" * 32, b"b" * 32)


def test_pymerkle_agrees_on_every_root_up_to_70(store):
    tree = _pymerkle_tree(SMALL)
    for n in range(SMALL + 1):
        ours = Frontier.from_nodes(n, store.reader(n)).root()
        assert tree.get_root(n) == ours == root([ref_leaf(i) for i in range(n)]), n


def test_pymerkle_agrees_on_every_inclusion_path_up_to_70_and_verifies_ours(store):
    tree = _pymerkle_tree(SMALL)
    for n in range(1, SMALL + 1):
        top = tree.get_root(n)
        for m in range(n):
            ours = inclusion_path(m, n, store.reader(n))
            theirs = tree.prove_inclusion(m + 1, n)          # pymerkle counts from one
            assert theirs.path == [ref_leaf(m)] + ours, (m, n)   # its path starts at the leaf
            assert verify_inclusion(m, n, ref_leaf(m), theirs.path[1:], top)
            # pymerkle's verifier, handed our path in its proof's frame (the rule bits it
            # derives from index and size alone)
            theirs.path = [ref_leaf(m)] + ours
            pymerkle.verify_inclusion(ref_leaf(m), top, theirs, index=m + 1, size=n)
            if n > 1:
                theirs.path = [ref_leaf(m)] + ours[:-1] + [SOME_HASH]
                with pytest.raises(pymerkle.InvalidProof):
                    pymerkle.verify_inclusion(ref_leaf(m), top, theirs, index=m + 1, size=n)


def test_pymerkle_consistency_proofs_are_laid_out_otherwise_but_accept_our_roots(store):
    """pymerkle always sends the hash its walk starts from (RFC 9162 leaves it out when the
    first tree is a perfect subtree, and the verifier puts first_hash there), and where the
    first size meets a split exactly it walks right, down to a single new leaf, where RFC
    9162 walks left (SUBPROOF's m <= k). Its proofs therefore differ from PROOF(m, D[n]) in
    content or order for every 0 < m < n, and its verifier takes no RFC proof; so it checks
    our roots here, and the transparency-dev vectors check our consistency paths."""
    tree = _pymerkle_tree(SMALL)
    theirs = tree.prove_consistency(4, 8)
    assert len(theirs.path) == 4 and ref_proof(4, 8) == [ref_mth(4, 8)]
    assert tree.prove_consistency(3, 4).path == [ref_leaf(3), ref_leaf(2), ref_mth(0, 2)]
    assert ref_proof(3, 4) == [ref_leaf(2), ref_leaf(3), ref_mth(0, 2)]
    for n in range(1, SMALL + 1):
        ours_n = Frontier.from_nodes(n, store.reader(n)).root()
        for m in range(1, n + 1):
            ours_m = Frontier.from_nodes(m, store.reader(m)).root()
            pymerkle.verify_consistency(ours_m, ours_n, tree.prove_consistency(m, n),
                                        prior_size=m, later_size=n)
            if m < n:
                assert tree.prove_consistency(m, n).path != consistency_path(
                    m, n, store.reader(n)), (m, n)


def test_module_exports_the_small_api():
    assert set(merkle.__all__) == {
        "EMPTY_ROOT", "HASH_SIZE", "MAX_SIZE", "Frontier", "consistency_path",
        "inclusion_path", "leaf_hash", "node_hash", "root", "verify_consistency",
        "verify_inclusion"}
