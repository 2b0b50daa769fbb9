"""The axis algebra: unification, refinement of products, cuts of concatenations, freezing."""

from graphmerge.layout import UNIT, Cat, Leaf, Prod, SpaceStore


def test_union_and_frozen_propagation():
    s = SpaceStore()
    a, b, c = s.new(4, "a"), s.new(4, "b"), s.new(4, "c", frozen="model input")
    s.unify(a, b, "t")
    assert s.find(a.space) == s.find(b.space)
    assert s.frozen_reason(a.space) is None
    s.unify(b, c, "t")
    assert s.frozen_reason(a.space) == "model input"


def test_size_one_is_unit_and_mismatch_freezes():
    s = SpaceStore()
    assert s.new(1) == UNIT
    a, b = s.new(4), s.new(6)
    s.unify(a, b, "why")
    assert "size mismatch" in s.frozen_reason(a.space)
    assert "size mismatch" in s.frozen_reason(b.space)


def test_mixed_radix_refinement_batch_times_heads():
    """(B=2) x (E=10) against (B*H=4) x (D=5): E is refined into H x D, B is kept."""
    s = SpaceStore()
    batch, embed = s.new(2, "B"), s.new(10, "E")
    bh, d = s.new(4, "BH"), s.new(5, "D")
    s.unify(Prod((batch, embed)), Prod((bh, d)), "view")
    e = s.normalize(embed)
    assert isinstance(e, Prod) and [s.size(p) for p in e.parts] == [2, 5]
    assert s.normalize(e.parts[1]) == s.normalize(d)
    assert s.normalize(bh) == Prod((s.normalize(batch), s.normalize(e.parts[0])))


def test_incompatible_factorizations_freeze():
    s = SpaceStore()
    a, b = s.new(2), s.new(3)
    c, d = s.new(3), s.new(2)
    s.unify(Prod((a, b)), Prod((c, d)), "view")
    assert all(s.frozen_reason(x.space) for x in (a, b, c, d))


def test_cut_defines_blocks_and_cats_unify_blockwise():
    s = SpaceStore()
    x = s.new(12, "x")
    q = s.cut(x, 0, 4, "split")
    k = s.cut(x, 4, 8, "split")
    v = s.cut(x, 8, 12, "split")
    norm = s.normalize(x)
    assert isinstance(norm, Cat) and len(norm.parts) == 3
    assert [s.normalize(p) for p in (q, k, v)] == list(norm.parts)
    y, z = s.new(4), s.new(8)
    s.unify(Cat((y, z)), x, "cat")  # refines z into two blocks of 4
    assert s.normalize(y) == s.normalize(q)
    assert s.normalize(z) == Cat((s.normalize(k), s.normalize(v)))


def test_cat_against_product_pins_the_block_index():
    s = SpaceStore()
    a, b = s.new(4), s.new(4)
    f, r = s.new(2, "F"), s.new(4, "R")
    s.unify(Cat((a, b)), Prod((f, r)), "reshape")
    assert s.frozen_reason(f.space)
    assert s.find(a.space) == s.find(b.space) == s.find(r.space)


def test_leaves_and_split():
    s = SpaceStore()
    x = s.new(12, "x")
    h, d = s.split(x, [3, 4], "view")
    assert s.leaves(x) == [s.find(h.space), s.find(d.space)]
    assert isinstance(h, Leaf) and s.size(h) == 3 and s.size(d) == 4
