"""BitStack against Python-integer transcriptions of the exact multiply."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mode.bench.allocated import TensorPeak
from mode.exact import BitStack, rational_gamma
from mode.exact.bit_stack import divide_word, multiply_word

WORD_LIMIT = 2**63
FIXED_POINT = 2**61


def chunk_width(k):
    """BitStack's chunk width: the widest of 32, 16, 8 bits leaving >= 8 of the 63 - k free bits, else the
    widest that fits."""
    fitting = [w for w in (32, 16, 8) if w <= 63 - k]
    return ([w for w in fitting if w <= 63 - k - 8] or fitting)[0]


class UnboundedBuffer:
    """Maclaurin et al. Alg. 3, numerator first, with one unbounded Python int per coordinate."""

    def __init__(self, size):
        self.buffer = [0] * size

    def multiply(self, v, n, k):
        d = 2**k
        out = []
        for i, x in enumerate(v):
            b = self.buffer[i]
            s = b % n
            b = b // n
            x = x * n + s
            b = b * d + x % d
            self.buffer[i] = b
            out.append(x // d)
        return out


class ChunkedBuffer(UnboundedBuffer):
    """The same, with the buffer spilled in w-bit chunks on BitStack's data-independent schedule.

    ``buffer`` holds only the live word; spilled chunks are dropped because the reference runs forward.
    Once a chunk is spilled the word no longer holds the whole buffer, so later popped digits (and
    products) differ from :class:`UnboundedBuffer`'s while staying within 1 of ``v * n / d``.
    """

    def __init__(self, size):
        super().__init__(size)
        self.bound = 0

    def spill(self, n, k):
        width = chunk_width(k)
        while (self.bound // n + 1) * 2**k > WORD_LIMIT:
            self.buffer = [b >> width for b in self.buffer]
            self.bound >>= width

    def multiply(self, v, n, k):
        self.spill(n, k)
        out = super().multiply(v, n, k)
        self.bound = (self.bound // n + 1) * 2**k - 1
        # The schedule's promise, checked on unbounded integers: the live word never needs a 64th bit.
        assert all(0 <= b <= self.bound < WORD_LIMIT for b in self.buffer)
        return out


def within_one(product, v, n, k):
    """|product - v * n / 2**k| < 1, on Python ints."""
    return all(abs(p * 2**k - x * n) < 2**k for p, x in zip(product, v, strict=True))


fixed_point_values = st.lists(
    st.one_of(st.integers(-FIXED_POINT + 1, FIXED_POINT - 1), st.sampled_from([0, -1, FIXED_POINT - 1])),
    min_size=1,
    max_size=8,
)


@settings(max_examples=15, deadline=None)
@given(
    gamma=st.one_of(st.floats(1e-3, 1 - 1e-7), st.sampled_from([0.5, 0.9, 0.99, 0.999999, 1 - 1e-7])),
    v=fixed_point_values,
    depth=st.integers(1, 3000),
    seed=st.integers(0, 2**32 - 1),
)
def test_momentum_updates_match_reference_and_reverse_bit_for_bit(gamma, v, depth, seed):
    n, k = rational_gamma(gamma)
    d = 2**k
    # Additive terms standing in for (1 - gamma) f(x), scaled so that |v| stays below 2**61.
    scale = max(1, ((d - n) << 60) // d)
    generator = torch.Generator().manual_seed(seed)
    forcing = torch.randint(-scale, scale + 1, (depth, len(v)), generator=generator)
    start = torch.tensor(v, dtype=torch.int64)
    stack = BitStack(start)
    reference = ChunkedBuffer(len(v))
    current = start
    for step in range(depth):
        before = current.tolist()
        product = stack.multiply(current, n, k)
        assert product.tolist() == reference.multiply(before, n, k)
        assert within_one(product.tolist(), before, n, k)
        current = product + forcing[step]
    assert len(stack) == depth
    for step in reversed(range(depth)):
        current = stack.divide(current - forcing[step], n, k)
    assert torch.equal(current, start)
    assert stack.is_empty() and len(stack) == 0 and stack.bits_per_coordinate() == 64


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 55), data=st.data())
def test_worst_case_inputs_fill_the_word_exactly_without_overflow(k, data):
    """Inputs chosen so every pushed digit is 2**k - 1 drive the live word to the schedule's bound."""
    d = 2**k
    n = 2 * data.draw(st.integers(0, d // 2 - 1)) + 1
    depth = data.draw(st.integers(1, 300))
    size = data.draw(st.integers(1, 4))
    highs = data.draw(
        st.lists(st.integers(-(2 ** (61 - k)), 2 ** (61 - k) - 1), min_size=size, max_size=size)
    )
    inverse = pow(n, -1, d)
    stack = BitStack(torch.zeros(size, dtype=torch.int64))
    reference = ChunkedBuffer(size)
    inputs, products = [], []
    for step in range(depth):
        reference.spill(n, k)
        # (v*n + s) mod d == d - 1 for the digit s the multiply is about to pop.
        v = [h * d + ((d - 1 - b % n) * inverse) % d for h, b in zip(highs, reference.buffer, strict=True)]
        expected = reference.multiply(v, n, k)
        assert reference.buffer == [reference.bound] * size
        product = stack.multiply(torch.tensor(v, dtype=torch.int64), n, k)
        assert product.tolist() == expected
        assert within_one(expected, v, n, k)
        inputs.append(v)
        products.append(product)
        highs = [(h * 7 + step) % 2 ** (61 - k) - 2 ** (60 - k) for h in highs]
    for step in reversed(range(depth)):
        assert stack.divide(products[step], n, k).tolist() == inputs[step]
    assert stack.is_empty()


@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.99])
def test_arithmetic_is_the_unbounded_algorithm_until_the_first_spill(gamma):
    n, k = rational_gamma(gamma)
    current = torch.randint(-FIXED_POINT, FIXED_POINT, (16,), generator=torch.Generator().manual_seed(3))
    stack = BitStack(current)
    reference = UnboundedBuffer(16)
    expected = current.tolist()
    steps = 0
    while True:
        current = stack.multiply(current, n, k)
        if stack.bits_per_coordinate() > 64:
            break
        expected = reference.multiply(expected, n, k)
        assert current.tolist() == expected
        steps += 1
    assert steps > 30


@settings(max_examples=20, deadline=None)
@given(
    factors=st.lists(st.floats(1e-3, 1 - 1e-7).map(rational_gamma), min_size=1, max_size=60),
    v=fixed_point_values,
)
def test_mixed_factors_reverse_in_order(factors, v):
    start = torch.tensor(v, dtype=torch.int64)
    stack = BitStack(start)
    reference = ChunkedBuffer(len(v))
    current = start
    for n, k in factors:
        expected = reference.multiply(current.tolist(), n, k)
        current = stack.multiply(current, n, k)
        assert current.tolist() == expected
    for n, k in reversed(factors):
        current = stack.divide(current, n, k)
    assert torch.equal(current, start)
    assert stack.is_empty()


@settings(max_examples=20, deadline=None)
@given(
    factors=st.lists(st.floats(1e-3, 1 - 1e-7).map(rational_gamma), min_size=2, max_size=60),
    undo=st.integers(1, 59),
    v=fixed_point_values,
)
def test_pushes_after_an_undo_spill_as_if_the_undone_pushes_never_happened(factors, undo, v):
    """The bound is rebuilt from the recorded pushes after an undo: pushing again from there gives the
    word, the chunks and the record of a stack that never made the undone pushes."""
    undo = min(undo, len(factors) - 1)
    kept, other = factors[:-undo], factors[-undo:][::-1]
    start = torch.tensor(v, dtype=torch.int64)
    walked, current = BitStack(start), start
    for n, k in factors:
        current = walked.multiply(current, n, k)
    for n, k in reversed(factors[-undo:]):
        current = walked.divide(current, n, k)
    for n, k in other:
        current = walked.multiply(current, n, k)
    fresh, expected = _multiply_all(BitStack(start), start, kept + other)
    assert torch.equal(current, expected) and torch.equal(walked.word, fresh.word)
    assert walked.pushes() == fresh.pushes() and walked.bits_per_coordinate() == fresh.bits_per_coordinate()
    for n, k in reversed(kept + other):
        current = walked.divide(current, n, k)
    assert torch.equal(current, start) and walked.is_empty()


def _multiply_all(stack, v, factors):
    for n, k in factors:
        v = stack.multiply(v, n, k)
    return stack, v


@pytest.mark.parametrize("k", [1, 31, 32, 47, 48, 55])
def test_extreme_values_reverse(k):
    n = 2**k - 1
    start = torch.tensor([-(2**62) + 1, 2**62 - 1, -1, 0, 1, -(2**61)], dtype=torch.int64)
    stack = BitStack(start)
    current = start
    for _ in range(50):
        current = stack.multiply(current, n, k)
    for _ in range(50):
        current = stack.divide(current, n, k)
    assert torch.equal(current, start)


def test_multidimensional_tensors_reverse():
    start = torch.randint(-FIXED_POINT, FIXED_POINT, (2, 3, 4), generator=torch.Generator().manual_seed(5))
    n, k = rational_gamma(0.9)
    stack = BitStack(start)
    current = start
    for _ in range(300):
        current = stack.multiply(current, n, k)
    assert stack.bits_per_coordinate() > 64
    for _ in range(300):
        current = stack.divide(current, n, k)
    assert torch.equal(current, start)


def storage_bounds(depth, n, k, bits):
    """Storage bounds of the bit_stack module docstring for ``depth`` multiplies by ``n / 2**k``."""
    width = chunk_width(k)
    headroom = 63 - k - width
    chunks = (bits - 64) // width
    rate = k - math.log2(n)
    lower = depth * rate + math.log2(n) + 1
    slack = (depth + chunks - 1) * math.log2(1 + 2.0**-headroom)
    return lower, 64 + width + depth * rate + slack


@pytest.mark.parametrize("depth", [1000, 10_000], ids=lambda depth: f"L{depth}")
@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.99, 0.999999])
def test_deep_stacks_reverse_and_store_what_is_destroyed(gamma, depth):
    n, k = rational_gamma(gamma)
    size = 16
    start = torch.randint(-FIXED_POINT, FIXED_POINT, (size,), generator=torch.Generator().manual_seed(7))
    stack = BitStack(start)
    current = start
    for _ in range(depth):
        current = stack.multiply(current, n, k)
    bits = stack.bits_per_coordinate()
    lower, upper = storage_bounds(depth, n, k, bits)
    assert lower <= bits < upper
    assert (bits - 64) % chunk_width(k) == 0
    # Chunks live in the narrowest dtype: w / 8 bytes per coordinate each, plus the int64 word.
    assert stack.nbytes() == size * 8 + size * (bits - 64) // 8
    for _ in range(depth):
        current = stack.divide(current, n, k)
    assert torch.equal(current, start)
    assert stack.is_empty()


def test_spills_and_absorbs_hold_at_most_one_word_sized_temporary():
    # On a deep net they run while a block's activations are alive, at the training step's peak.
    size, (n, k) = 4096, rational_gamma(0.9)
    stack = BitStack(torch.zeros(size))
    current = torch.randint(-FIXED_POINT, FIXED_POINT, (size,), generator=torch.Generator().manual_seed(3))
    start, peaks = current, []
    while len(peaks) < 3:
        bits = stack.bits_per_coordinate()
        with TensorPeak() as spill:
            stack.reserve(("multiply", n, k))
        if stack.bits_per_coordinate() > bits:
            peaks.append(spill.peak_bytes)
        stack.word, current = multiply_word(stack.word, current, n, k)
    word = size * 8
    chunk = size * chunk_width(k) // 8
    assert peaks == [word + chunk] * 3  # the masked word, and the chunk kept
    absorbed = []
    while len(stack):
        bits = stack.bits_per_coordinate()
        stack.word, current = divide_word(stack.word, current, n, k)
        with TensorPeak() as absorb:
            stack.release(("multiply", n, k))
        if stack.bits_per_coordinate() < bits:
            absorbed.append(absorb.peak_bytes)
    assert absorbed == [word] * 3  # the chunk widened to int64
    assert torch.equal(current, start)
    assert stack.is_empty()


@pytest.mark.parametrize("gamma", [0.5, 0.99, 0.999999])
def test_storage_is_within_a_bit_of_the_ideal_with_headroom(gamma):
    """For these gammas (headroom m >= 7) the storage at L = 1000 is within a bit of L log2(d/n) + 64 + w."""
    n, k = rational_gamma(gamma)
    depth = 1000
    stack = BitStack(torch.zeros(1, dtype=torch.int64))
    current = torch.zeros(1, dtype=torch.int64)
    for _ in range(depth):
        current = stack.multiply(current, n, k)
    assert stack.bits_per_coordinate() <= depth * (k - math.log2(n)) + 64 + chunk_width(k) + 1


def test_divide_on_empty_stack_raises():
    stack = BitStack(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(IndexError, match="empty"):
        stack.divide(torch.zeros(3, dtype=torch.int64), 3, 2)


@pytest.mark.parametrize("method", ["multiply", "divide"])
def test_zero_numerator_has_no_inverse(method):
    stack = BitStack(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="no inverse"):
        getattr(stack, method)(torch.zeros(3, dtype=torch.int64), 0, 0)


@pytest.mark.parametrize(("n", "k"), [(4, 2), (5, 2), (1, 56), (-1, 3)])
def test_factor_outside_range_is_rejected(n, k):
    stack = BitStack(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="k"):
        stack.multiply(torch.zeros(3, dtype=torch.int64), n, k)


def test_divide_must_match_the_last_multiply():
    stack = BitStack(torch.zeros(3, dtype=torch.int64))
    product = stack.multiply(torch.ones(3, dtype=torch.int64), 3, 2)
    with pytest.raises(ValueError, match="does not match"):
        stack.divide(product, 5, 3)
    assert torch.equal(stack.divide(product, 3, 2), torch.ones(3, dtype=torch.int64))


@pytest.mark.parametrize(
    ("v", "error"),
    [
        (torch.zeros(3, dtype=torch.int32), TypeError),
        (torch.zeros(3), TypeError),
        ([0, 0, 0], TypeError),
        (torch.zeros(4, dtype=torch.int64), ValueError),
        (torch.zeros(3, 1, dtype=torch.int64), ValueError),
    ],
)
def test_v_is_validated(v, error):
    stack = BitStack(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(error, match="v must"):
        stack.multiply(v, 3, 2)


def test_like_must_be_a_tensor():
    with pytest.raises(TypeError, match="like"):
        BitStack([1, 2, 3])


def test_pushes_lists_the_live_pushes_oldest_first_with_their_spills():
    stack = BitStack(torch.zeros(3, dtype=torch.int64))
    y = torch.tensor([5, -7, 2**40])
    assert stack.pushes() == []
    y = stack.multiply(y, 3, 2)
    y = stack.push_bits(y, torch.tensor([0, 62, 1]))
    # 62 plain bits on top of a multiply's 2 bits of bound overflow the 63-bit word: the push spills a
    # 32-bit chunk, after which the second multiply (bound * 4/3 < 2**63) fits without one
    y = stack.multiply(y, 3, 2)
    pushes = stack.pushes()
    assert [op for op, _, _ in pushes] == [(("multiply", 3, 2),), (("bits", 62),), (("multiply", 3, 2),)]
    assert [spilled for _, _, spilled in pushes] == [0, 1, 0]
    assert all(width == 32 for _, width, _ in pushes)
    assert stack.bits_per_coordinate() == 64 + 32
    stack.divide(y, 3, 2)
    assert stack.pushes() == pushes[:2]


def test_a_plain_pop_refuses_a_stack_whose_last_push_is_not_plain():
    stack = BitStack(torch.zeros(2, dtype=torch.int64))
    shift = torch.tensor([1, 3])
    with pytest.raises(ValueError, match="not a plain bit push"):
        stack.pop_bits(torch.tensor([1, 2]), shift)
    y = stack.multiply(torch.tensor([5, 7]), 3, 2)
    with pytest.raises(ValueError, match="not a plain bit push"):
        stack.pop_bits(y, shift)
    assert torch.equal(stack.divide(y, 3, 2), torch.tensor([5, 7]))
