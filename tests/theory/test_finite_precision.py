"""mode.theory.finite_precision: bounds, measurements, and checks that fail when their claim is false."""

import dataclasses
import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mode.exact import BitStack
from mode.exact.bit_stack import chunk_width
from mode.exact.block_float import HYSTERESIS, MANTISSA_BITS
from mode.nn import MomentumNet
from mode.schemes.momentum import MomentumCoefficients
from mode.theory import finite_precision as fp
from mode.theory.fields import TanhField, frozen
from tests.theory.support import refuted


def test_growth_rate_band_and_its_validity():
    low, high = fp.growth_rate_band(0.5, 1.0, 0.0)
    assert low == high == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="lipschitz"):
        fp.growth_rate_band(0.9, 1.0, 0.1)


def test_float_reversal_error_grows_with_depth():
    field = frozen(TanhField(8, seed=0, lipschitz=0.01))
    x0 = torch.randn(16, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = [
        fp.float_reversal_error(MomentumNet([field] * L, gamma=0.5, backprop="autograd"), x0)
        for L in (1, 20, 40)
    ]
    assert errors[0] < 1e-15 < errors[1] < errors[2]
    assert errors[2] / errors[1] == pytest.approx(2.0**20, rel=0.5)


def test_bits_destroyed_by_halving():
    # gamma = 1/2 on an even-aligned window: every image has exactly 2 preimages per multiply.
    assert fp.bits_destroyed(1, 1, 1) == pytest.approx(1.0, abs=1e-5)


@given(
    k=st.integers(1, 55),
    numerator=st.sampled_from(["one", "max", "random", "near_max"]),
    seed=st.integers(0, 2**32 - 1),
    depth=st.integers(1, 300),
)
@settings(max_examples=60, deadline=None)
def test_stack_bounds_hold_after_every_multiply(k, numerator, seed, depth):
    import random

    rng = random.Random(seed)
    n = {
        "one": 1,
        "max": (1 << k) - 1,
        "random": rng.randrange(1, 1 << k) | 1,
        "near_max": max(1, (1 << k) - rng.randint(1, 1000)) | 1,
    }[numerator]
    if n >= 1 << k:
        n = (1 << k) - 1
    stack = BitStack(torch.zeros(3, dtype=torch.int64))
    v = torch.tensor([rng.randrange(-(2**40), 2**40) for _ in range(3)])
    for j in range(1, depth + 1):
        v = stack.multiply(v, n, k)
        bits = stack.bits_per_coordinate()
        chunks, remainder = divmod(bits - 64, chunk_width(k))
        low, high = fp.stack_bounds(j, n, k, chunks)
        assert remainder == 0 and low <= bits < high, (n, k, j, bits, low, high)


def test_naive_word_bound_is_exceeded():
    # The tempting "L log2(d/n) bits plus one word" is not what the stack guarantees (see FP-4).
    rule = MomentumCoefficients.from_gamma(math.nextafter(0.2, 1), bits=55)
    stack, v = BitStack(torch.zeros(2, 4, dtype=torch.int64)), torch.arange(8).reshape(2, 4) << 50
    for _ in range(200):
        v = stack.multiply(v, rule.n, rule.k)
    assert stack.bits_per_coordinate() > 64 + 200 * math.log2(2**rule.k / rule.n)


def test_wrong_rate_fails_fp1(monkeypatch):
    right = fp.growth_rate_band
    monkeypatch.setattr(fp, "growth_rate_band", lambda g, h, lip: tuple(2 * b for b in right(g, h, lip)))
    assert refuted("FP-1")


def test_wrong_rate_fails_fp2(monkeypatch):
    right = fp.growth_rate_band
    monkeypatch.setattr(fp, "growth_rate_band", lambda g, h, lip: tuple(0.8 * b for b in right(g, h, lip)))
    assert refuted("FP-2")


@pytest.mark.parametrize(
    ("claim", "tilt"),
    # FP-1: 0.03 per step off log(1/gamma), outside the proved band widened by the injected errors'
    # remainder, though within the 5% of the rate that a fit over depths allowed at gamma = 0.3 and 0.5.
    # FP-2: 0.05 off kappa (1.2%), outside its proved band, though inside the 5% a fit over depths needed.
    [("FP-1", 0.03), ("FP-1", -0.03), ("FP-2", 0.05), ("FP-2", -0.05)],
)
def test_misstated_growth_fails(monkeypatch, claim, tilt):
    right = fp.reversal_profile

    def tilted(net, x0):
        profile = right(net, x0)
        steps = np.arange(profile.error.size)
        return dataclasses.replace(profile, error=profile.error * np.exp(tilt * steps * net.step))

    monkeypatch.setattr(fp, "reversal_profile", tilted)
    assert refuted(claim)


def test_inverse_that_is_not_the_forwards_fails_fp2(monkeypatch):
    # Dividing by gamma (1 + 1e-6) keeps the rate inside the band, but every step then adds 1e-6 of the
    # error to it: more than FP-2's premise allows once the error has grown 10^4-fold.
    def velocity_inverse(self, v, fx):
        return (v - self.one_minus_gamma * fx) / (self.gamma * (1 + 1e-6))

    monkeypatch.setattr(MomentumCoefficients, "float_velocity_inverse", velocity_inverse)
    assert refuted("FP-2")


def test_window_rate_band():
    gamma, h, lip = 0.9, 0.025, 0.01
    low, high = fp.growth_rate_band(gamma, h, lip)
    assert fp.window_rate_band(gamma, h, lip, 10, 0.0) == pytest.approx((low / h, high / h), rel=1e-15)
    wide, narrow = fp.window_rate_band(gamma, h, lip, 10, 0.01), fp.window_rate_band(gamma, h, lip, 100, 0.01)
    assert wide[0] < narrow[0] < low / h < high / h < narrow[1] < wide[1]
    assert wide[0] == pytest.approx((low + math.log(0.99) / 10) / h, rel=1e-15)
    for steps, injection in ((0, 0.01), (10, 1.0), (10, -0.1)):
        with pytest.raises(ValueError, match="injection"):
            fp.window_rate_band(gamma, h, lip, steps, injection)


def test_reversal_profile_doubles_per_step_at_gamma_one_half():
    field = frozen(TanhField(8, seed=0, lipschitz=0.01))
    net = MomentumNet([field] * 38, gamma=0.5, backprop="autograd")
    x0 = torch.randn(16, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    profile = fp.reversal_profile(net, x0)
    assert profile.error.shape == profile.in_cone.shape == (39,) and profile.injected.shape == (38,)
    assert profile.error[0] == 0.0 and profile.in_cone[20:].all()
    # FP-2's premise holds from step 20 (rho_- - 1 = 0.96), so the rate to step 38 lies in its band.
    assert profile.injected[20:].max() <= 0.01 * 0.96 * profile.error[20]
    rate = math.log(profile.error[38] / profile.error[20]) / 18
    low, high = fp.window_rate_band(0.5, 1.0, 0.01, 18, 0.01)
    assert low <= rate <= high


def test_overstated_information_loss_fails_fp3(monkeypatch):
    right = fp.information_bounds
    monkeypatch.setattr(
        fp, "information_bounds", lambda n, k, s, w: (right(n, k, s, w)[0] + 0.2, right(n, k, s, w)[1])
    )
    assert refuted("FP-3")


def test_understated_information_loss_fails_fp3(monkeypatch):
    monkeypatch.setattr(fp, "information_bounds", lambda n, k, s, w: (0.0, s * math.log2((1 << k) / n)))
    assert refuted("FP-3")


@pytest.mark.parametrize("which", ["naive", "lower"])
def test_wrong_stack_bound_fails_fp4(monkeypatch, which):
    right = fp.stack_bounds

    def wrong(depth, n, k, chunks):
        low, high = right(depth, n, k, chunks)
        if which == "naive":
            return low, 64.5 + depth * math.log2(2**k / n)
        return low + 1.5, high

    monkeypatch.setattr(fp, "stack_bounds", wrong)
    assert refuted("FP-4")


# -- FP-5 ---------------------------------------------------------------------------------------------------

#: A corner of FP-5's grid that still has exponent moves both ways, a hysteresis gap of 4, relabelled zero
#: samples and the two stack-loading runs: the sabotage tests below run the check on it (about 2 s).
SMALL_FP5 = {
    "exponents": ("sample",),
    "dtypes": (torch.float64,),
    "scales": (1e-4,),
    "gammas": (0.3,),
    "depths": (40,),
}


@pytest.fixture
def small_fp5(monkeypatch):
    monkeypatch.setattr(fp, "FP5_CASES", SMALL_FP5)


def _numerator(k, kind, rng):
    n = {
        "one": 1,
        "max": (1 << k) - 1,
        "random": rng.randrange(1, 1 << k) | 1,
        "near_max": max(1, (1 << k) - rng.randint(1, 1000)) | 1,
    }[kind]
    return min(n, (1 << k) - 1)


@given(
    k=st.integers(1, 55),
    numerator=st.sampled_from(["one", "max", "random", "near_max"]),
    widths=st.sampled_from(["none", "small", "wide", "any"]),
    seed=st.integers(0, 2**32 - 1),
    length=st.integers(1, 200),
)
@settings(max_examples=40, deadline=None)
def test_exponent_stack_bounds_hold_after_every_push(k, numerator, widths, seed, length):
    # Plain pushes, multiplies and fused (plain, multiply, plain) pushes in a random order, as the momentum
    # step makes them; the bits count depends on the schedule only, which reserve() sets.
    rng = random.Random(seed)
    n = _numerator(k, numerator, rng)
    width = {
        "none": lambda: 0,
        "small": lambda: rng.randint(0, 3),
        "wide": lambda: rng.randint(28, 62),
        "any": lambda: rng.randint(0, 62),
    }[widths]
    stack = BitStack(torch.zeros(3, dtype=torch.int64))
    for _ in range(length):
        kind, fused = rng.random(), (("bits", width()), ("multiply", n, k), ("bits", width()))
        ops = (("multiply", n, k),)
        if kind < 0.3:
            ops = (("bits", width()),)
        elif kind < 0.7 and stack.fits(*fused):
            ops = fused
        stack.reserve(*ops)
        pushes = stack.pushes()
        low, high = fp.exponent_stack_bounds(pushes, n, k)
        bits = stack.bits_per_coordinate()
        assert low <= bits < high, (n, k, pushes[-1], bits, low, high)


def test_exponent_stack_bounds_of_multiplies_alone():
    # gamma = 1/2: 63 multiplies fill the word exactly (64 bits, FP-4); the 64th spills one 32-bit chunk.
    stack = BitStack(torch.zeros(1, dtype=torch.int64))
    for _ in range(64):
        stack.multiply(torch.zeros(1, dtype=torch.int64), 1, 1)
        low, high = fp.exponent_stack_bounds(stack.pushes(), 1, 1)
        assert low <= stack.bits_per_coordinate() < high
    assert (low, stack.bits_per_coordinate()) == (65, 96)


def test_exponent_stack_bounds_refuse_two_multiplies_in_one_push():
    with pytest.raises(ValueError, match="at most one multiply"):
        fp.exponent_stack_bounds([((("multiply", 1, 1), ("multiply", 1, 1)), 32, 0)], 1, 1)


def test_exact_in_float64():
    assert fp.exact_in_float64(1, 1) and fp.exact_in_float64(3, 53)
    assert fp.exact_in_float64((1 << 55) - (1 << 52), 55)  # 1 - gamma = 2**-3
    assert not fp.exact_in_float64(7205759403792795, 55)  # nextafter(0.2, 1) on 55 bits


def test_grid_bound():
    assert fp.GRID_BITS == MANTISSA_BITS - 1 - HYSTERESIS == 55
    assert fp.grid_bound(1.0) == 2.0**-55 * (1 + 2.0**-50)
    # Below 2**-963 the grid is 2**-1022, kept up to 2**4 times coarser.
    assert fp.grid_bound(2.0**-1000) == 2.0**-1018


def test_quotient_estimate_exact_in_its_range_only():
    divisors, numerators = fp._quotient_cases(random.Random(1))
    assert fp.quotient_estimate_errors(divisors, numerators) == 0
    assert fp.quotient_estimate_errors([17, 101], numerators) > 0


def test_fp5_measurement_on_a_small_grid():
    m = fp.measure_exact_reversal(**SMALL_FP5)
    assert m.exact and m.stack_inside and m.moves > 0 and m.pushed_bits > 0
    assert 0.5 < m.grid <= 1  # a hysteresis gap of 4 bits is reached
    assert m.integer_rounding < 1 and m.error < 1


def test_fp5_passes_on_the_small_grid(small_fp5):
    # So that the refutations below come from the sabotage, not from the smaller grid.
    assert not refuted("FP-5")


def test_wrong_hysteresis_fails_fp5(small_fp5, monkeypatch):
    # Claiming a grid of 2**-56 of the bound, as a hysteresis of 3 bits would give.
    monkeypatch.setattr(fp, "GRID_BITS", MANTISSA_BITS - 1 - (HYSTERESIS - 1))
    assert refuted("FP-5")


@pytest.mark.parametrize("which", ["velocity", "position", "float products", "rounded 1 - gamma"])
def test_understated_rounding_fails_fp5(small_fp5, monkeypatch, which):
    wrong = {
        "velocity": lambda n, k: (n / 2**k + 0.5, 1.0, 1.5, 3.0),
        "position": lambda n, k: (n / 2**k + 1.5, 1.0, 1.0, 3.0),
        "float products": lambda n, k: (n / 2**k + 1.5, 0.0, 1.5, 0.0),
        "rounded 1 - gamma": lambda n, k: (n / 2**k + 1.5, 1.0, 1.5, 3.0),
    }[which]
    monkeypatch.setattr(fp, "step_error_bounds", wrong)
    assert refuted("FP-5")


@pytest.mark.parametrize("which", ["multiplies only", "lower"])
def test_wrong_stack_bound_fails_fp5(small_fp5, monkeypatch, which):
    right = fp.exponent_stack_bounds

    def wrong(pushes, n, k):
        if which == "multiplies only":  # FP-4's bound, blind to the exponent pushes
            multiplies = sum(o[0] == "multiply" for op, _, _ in pushes for o in fp._flat_ops(op))
            return fp.stack_bounds(max(multiplies, 1), n, k, sum(spilled for _, _, spilled in pushes))
        low, high = right(pushes, n, k)
        return low + 1, high

    monkeypatch.setattr(fp, "exponent_stack_bounds", wrong)
    assert refuted("FP-5")


def test_quotient_estimate_below_its_range_fails_fp5(small_fp5, monkeypatch):
    monkeypatch.setattr(fp, "QUOTIENT_MIN_DIVISOR", 16)
    assert refuted("FP-5")


def test_inexact_inverse_fails_fp5(small_fp5, monkeypatch):
    right = MomentumCoefficients.exact_undo_velocity

    def off_by_one(self, state, fx):
        right(self, state, fx)
        state.v = state.v + (torch.arange(state.v.numel()).reshape(state.v.shape) == 0)

    monkeypatch.setattr(MomentumCoefficients, "exact_undo_velocity", off_by_one)
    assert refuted("FP-5")
