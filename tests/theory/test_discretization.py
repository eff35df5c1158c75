"""mode.theory.discretization: helpers, and checks that fail when their claim is false."""

import numpy as np
import pytest

from mode.nn import MomentumNet
from mode.schemes import SCHEMES
from mode.theory import discretization as disc
from tests.theory.support import refuted


def test_fitted_order_of_a_power_law():
    sizes = np.array([0.1, 0.05, 0.025])
    assert disc.fitted_order(sizes, 3 * sizes**2.5) == pytest.approx(2.5)


@pytest.mark.parametrize(("name", "wrong_order"), [("leapfrog", 3), ("rk4", 3), ("momentum", 2)])
def test_wrong_declared_order_fails_disc1(monkeypatch, name, wrong_order):
    monkeypatch.setattr(SCHEMES[name], "order", wrong_order)
    assert refuted("DISC-1")


def test_slower_limit_fails_disc2(monkeypatch):
    right = disc.reference_solution
    monkeypatch.setattr(
        disc,
        "reference_solution",
        lambda x0, eps, T=1.0, v0=None, method="DOP853": right(x0, eps**0.5, T, v0, method),
    )
    assert refuted("DISC-2")


def test_wrong_mass_fails_disc3(monkeypatch):
    def mismatched(blocks, eps, step, backprop):
        return MomentumNet(blocks, eps=1.05 * eps, step=step, backprop=backprop)

    monkeypatch.setattr(disc, "MomentumNet", mismatched)
    assert refuted("DISC-3")
