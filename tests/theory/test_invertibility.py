"""mode.theory.invertibility: helpers, and checks that fail when the claim they verify is false."""

import math

import numpy as np
import pytest
import torch

from mode.schemes import SCHEMES
from mode.theory import invertibility as inv
from mode.theory.fields import TanhField
from tests.theory.support import refuted


@pytest.mark.parametrize(
    ("scheme", "coefficients"),
    [
        ("euler", [1.0, 1.0]),
        ("heun", [0.5, 1.0, 1.0]),
        ("rk4", [1 / 24, 1 / 6, 0.5, 1.0, 1.0]),
    ],
)
def test_stability_polynomial(scheme, coefficients):
    np.testing.assert_allclose(inv.stability_polynomial(scheme), coefficients, rtol=1e-15)


def test_singular_linear_field_closed_forms():
    h = 0.2
    np.testing.assert_allclose(inv.singular_linear_field("euler", h), (-1 / (2 * h), h / 2), rtol=1e-14)
    np.testing.assert_allclose(inv.singular_linear_field("heun", h), (-1 / h, h / 2), rtol=1e-14)


def test_conformal_factor_values_and_refusal():
    assert inv.conformal_factor("momentum", 0.1, 0.4) == pytest.approx(0.75)
    assert inv.conformal_factor("exp-momentum", 0.1, 0.4) == pytest.approx(math.exp(-0.25))
    assert inv.conformal_factor("leapfrog", 0.1, 0.4) == pytest.approx(math.exp(-0.25))
    with pytest.raises(ValueError, match="no f-independent volume factor"):
        inv.conformal_factor("rk4", 0.1, 0.4)


def test_euler_collision_states_are_distinct():
    _, z1, z2 = inv.euler_collision(0.5, 1.0)
    assert not torch.equal(z1, z2)


def test_wrong_inverse_fails_inv1(monkeypatch):
    momentum = SCHEMES["momentum"]

    def forgets_gamma(f, x, v, t, h, eps):
        x = x - h * v
        return x, v - (1 - momentum.gamma(h, eps)) * f(x, t)

    monkeypatch.setattr(momentum, "_inverse", forgets_gamma)
    assert refuted("INV-1")


def test_wrong_mass_fails_inv2(monkeypatch):
    right = inv.singular_linear_field
    monkeypatch.setattr(inv, "singular_linear_field", lambda s, h: (right(s, h)[0], 1.1 * right(s, h)[1]))
    assert refuted("INV-2")


def test_wrong_collision_fails_inv2(monkeypatch):
    right = inv.euler_collision
    monkeypatch.setattr(inv, "euler_collision", lambda h, eps: (*right(h, eps)[:2], right(h, eps)[2] * 1.01))
    assert refuted("INV-2")


@pytest.mark.parametrize("wrong", [lambda c: 1.001 * c, lambda c: c**0.9, lambda c: 1.0])
def test_wrong_determinant_fails_inv3(monkeypatch, wrong):
    right = inv.conformal_factor
    monkeypatch.setattr(inv, "conformal_factor", lambda s, h, eps: wrong(right(s, h, eps)))
    assert refuted("INV-3")


def test_non_volume_preserving_coupling_fails_inv4(monkeypatch):
    right = inv.additive_coupling
    monkeypatch.setattr(inv, "additive_coupling", lambda F, G: lambda z: 1.001 * right(F, G)(z))
    assert refuted("INV-4")


def test_wrong_undamped_limit_fails_inv5(monkeypatch):
    def drift_only(g, h):
        return lambda z: z + h * torch.cat([z[..., z.shape[-1] // 2 :], 0 * z[..., : z.shape[-1] // 2]], -1)

    monkeypatch.setattr(inv, "verlet_map", drift_only)
    assert refuted("INV-5")


def test_non_gradient_field_fails_inv6(monkeypatch):
    class NotAGradient(TanhField):
        def __init__(self, d, seed):
            super().__init__(d, seed)

        def potential(self, x, t):
            return (x**2).sum(-1)

    monkeypatch.setattr(inv, "GradientField", NotAGradient)
    assert refuted("INV-6")


def test_wrong_conformal_factor_fails_inv6(monkeypatch):
    right = inv.conformal_factor
    monkeypatch.setattr(inv, "conformal_factor", lambda s, h, eps: right(s, h, eps) ** 2)
    assert refuted("INV-6")
