"""parity's criteria fail on models that the theory does not predict to meet them.

1-D: the gamma = 0.99 net must end within a factor of the first trough of its linear fields, the ODE-like
half turn (0.00487), on both sides: a smaller mass (gamma = 0.9) or the ResNet's exact one-step fit
misses it. -I_d: each momentum loss must be its exact optimum (1 + m_eps)^2 / 3; a first-order map or
a quarter of the mass misses it.
"""

import pytest
import torch

import mode.experiments.parity as parity
from mode.experiments import run_experiment
from mode.theory.linear_maps import m_eps
from tests.experiments.test_experiments import REDUCED

ONE_D = f"1-D momentum gamma=0.99 loss within a factor {parity.TROUGH_FACTOR:g} of the first trough"
MINUS_I = "-I_3 momentum eps=4 relative excess over the theory optimum"


def test_the_linear_fields_of_the_net():
    lam1, slope1, exact = parity.linear_net_landmarks()
    assert lam1 == pytest.approx(-4.1476, abs=1e-3) and (1 + slope1) ** 2 == pytest.approx(0.004872, abs=1e-6)
    assert parity.linear_net_slopes(exact, parity.GAMMA)[0] == pytest.approx(-1.0, abs=1e-9)
    # the first trough is the flow's half turn, within 6 % of its value
    flow = (1 + m_eps(1 / (1 - parity.GAMMA), T=float(parity.DEPTH))) ** 2
    assert abs(1 + slope1) ** 2 / flow == pytest.approx(0.94, abs=0.01)


@pytest.mark.parametrize("gamma", [0.9, 0.0], ids=["smaller mass", "ResNet"])
def test_the_one_dimensional_criterion_fails_off_the_ode_half_turn(gamma, monkeypatch, tmp_path):
    monkeypatch.setattr(parity, "QUICK", {**REDUCED["parity"][1], "linear_steps": 20})
    monkeypatch.setattr(parity, "NETWORKS_1D", {"momentum gamma=0.99": gamma, "NODE": None})
    result = run_experiment("parity", quick=True, seed=0, out=tmp_path)
    assert not result["criteria"][ONE_D]["passed"], result["criteria"][ONE_D]


def _first_order(A, eps):
    return torch.linalg.matrix_exp(A)


def _smaller_mass(A, eps, matrix=parity.momentum_matrix):
    return matrix(A, eps / 4)


@pytest.mark.parametrize("wrong", [_first_order, _smaller_mass])
def test_the_minus_identity_criterion_fails_off_the_optimum(wrong, monkeypatch, tmp_path):
    monkeypatch.setattr(parity, "QUICK", {**REDUCED["parity"][1], "steps": 10, "node_steps": 2})
    monkeypatch.setattr(parity, "momentum_matrix", wrong)
    result = run_experiment("parity", quick=True, seed=0, out=tmp_path)
    assert not result["criteria"][MINUS_I]["passed"], result["criteria"][MINUS_I]
