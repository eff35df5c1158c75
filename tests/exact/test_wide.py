"""Double-width helpers against Python integers."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mode.exact import fusion
from mode.exact.wide import divmod_shifted, floor_divmod, mul_add_split


@st.composite
def operands(draw):
    """k, n < 2**k and three columns of values below 2**k, biased to the extremes."""
    k = draw(st.integers(1, 55))
    n = draw(st.one_of(st.just((1 << k) - 1), st.integers(1, (1 << k) - 1)))
    below = st.one_of(st.just(0), st.just((1 << k) - 1), st.integers(0, (1 << k) - 1))
    size = draw(st.integers(1, 16))
    rows = draw(st.lists(st.tuples(below, below, below), min_size=size, max_size=size))
    return k, n, rows


@settings(max_examples=75, deadline=None)
@given(operands())
def test_mul_add_split_matches_python_ints(case):
    k, n, rows = case
    r = [a for a, _, _ in rows]
    s = [c % n for _, _, c in rows]
    high, low = mul_add_split(torch.tensor(r), n, torch.tensor(s), k)
    t = [a * n + c for a, c in zip(r, s, strict=True)]
    assert high.tolist() == [x >> k for x in t]
    assert low.tolist() == [x & ((1 << k) - 1) for x in t]


@settings(max_examples=75, deadline=None)
@given(operands())
def test_divmod_shifted_matches_python_ints(case):
    k, n, rows = case
    e = [a % n for a, _, _ in rows]
    b = [c for _, c, _ in rows]
    quotient, remainder = divmod_shifted(torch.tensor(e), torch.tensor(b), n, k)
    expected = [divmod(x * 2**k + y, n) for x, y in zip(e, b, strict=True)]
    assert quotient.tolist() == [q for q, _ in expected]
    assert remainder.tolist() == [m for _, m in expected]


INT64 = st.one_of(
    st.sampled_from([-(2**63), -(2**63) + 1, -1, 0, 1, 2**63 - 1]), st.integers(-(2**63), 2**63 - 1)
)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(INT64, min_size=1, max_size=16),
    st.one_of(st.sampled_from([1, 2, 3, 2**31 - 1]), st.integers(1, 2**62)),
)
def test_floor_divmod_matches_python_ints_at_every_sign(a, n):
    # Truncating division plus a correction where the remainder came out negative: Python's floor divmod.
    quotient, remainder = floor_divmod(torch.tensor(a), n)
    assert quotient.tolist() == [x // n for x in a]
    assert remainder.tolist() == [x % n for x in a]


def test_compiled_floor_divmod_agrees_with_python_ints():
    a = torch.tensor([-(2**63), -(2**62) - 7, -5, -1, 0, 1, 5, 2**62 + 7, 2**63 - 1])
    with fusion.compiling(True):
        quotient, remainder = fusion.fused(floor_divmod)(a, 1932735283)
    assert quotient.tolist() == [x // 1932735283 for x in a.tolist()]
    assert remainder.tolist() == [x % 1932735283 for x in a.tolist()]


def test_mul_add_split_at_the_edges_of_each_path():
    # k = 31 | 32, 41 | 42 switch between the direct, two-piece and limb products; extremes of r, s, n.
    for k in (30, 31, 32, 34, 37, 40, 41, 42, 55):
        for n in (1, (1 << k) - 1, (1 << min(k, 62 - k)) - 1, 3 << (k - 2)):
            r = [0, 1, (1 << k) - 1, (1 << k) - 2, 12345 % (1 << k)]
            s = [n - 1, 0, n - 1, n // 2, 0]
            high, low = mul_add_split(torch.tensor(r), n, torch.tensor(s), k)
            t = [a * n + c for a, c in zip(r, s, strict=True)]
            assert high.tolist() == [x >> k for x in t], (k, n)
            assert low.tolist() == [x & ((1 << k) - 1) for x in t], (k, n)
