"""mode.theory.learning_to_optimize: helpers, and checks that fail when their claim is false."""

import math

import numpy as np
import pytest
import torch

from mode.theory import learning_to_optimize as l2o
from mode.theory.phase_maps import verlet_map
from tests.theory.support import refuted


def test_polygon_area_and_orientation():
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    assert l2o.polygon_area(square) == pytest.approx(1.0)
    assert l2o.polygon_area(square[::-1]) == pytest.approx(-1.0)
    assert l2o.polygon_area(l2o._square_boundary(10)) == pytest.approx(4.0)


def test_heavy_ball_rate_closed_forms():
    # Underdamped: modulus sqrt(gamma); overdamped: the larger real root of z^2 - (1 + b - a lam) z + b.
    assert l2o.heavy_ball_rate([1.0], 0.9) == pytest.approx(math.sqrt(0.9), rel=1e-14)
    a, b, lam = 0.7, 0.3, 0.05
    trace = 1 + b - a * lam
    assert l2o.heavy_ball_rate([lam], 0.3) == pytest.approx((trace + math.sqrt(trace**2 - 4 * b)) / 2)
    assert l2o.heavy_ball_rate([2 * (1 + 0.5) / 0.5 + 0.1], 0.5) > 1  # outside 0 < a lam < 2 (1 + b)


def test_verlet_focusing_step_turns_a_quarter():
    omega, steps = 2.0, 10
    h = l2o.verlet_focusing_step(omega, steps)
    assert math.acos(1 - (h * omega) ** 2 / 2) * steps == pytest.approx(math.pi / 2)


def test_expanding_coupling_fails_l2o1(monkeypatch):
    right = l2o.additive_coupling
    monkeypatch.setattr(l2o, "additive_coupling", lambda F, G: lambda z: 1.01 * right(F, G)(z))
    assert refuted("L2O-1")


def test_volume_preserving_network_fails_l2o2(monkeypatch):
    class VerletNet:
        """A volume-preserving network posing as a MomentumNet: its image keeps area 4."""

        gamma_effective = 0.7

        def __init__(self, blocks, gamma, backprop, v0):
            self.depth, self.v0 = len(blocks), v0

        def __call__(self, x, return_velocity):
            z = torch.cat([x, self.v0], 1)
            step = verlet_map(lambda y: -torch.tanh(y - 1), 0.3)
            for _ in range(self.depth):
                z = step(z)
            return z[:, :1], z[:, 1:]

    monkeypatch.setattr(l2o, "MomentumNet", VerletNet)
    assert refuted("L2O-2")


def test_wrong_rate_fails_l2o3(monkeypatch):
    monkeypatch.setattr(l2o, "heavy_ball_rate", lambda curvatures, gamma, h=1.0: math.sqrt(gamma))
    assert refuted("L2O-3")


def test_mistuned_step_fails_l2o4(monkeypatch):
    right = l2o.verlet_focusing_step
    monkeypatch.setattr(l2o, "verlet_focusing_step", lambda omega, steps: 1.001 * right(omega, steps))
    assert refuted("L2O-4")
