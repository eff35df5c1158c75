import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mode
from mode.schemes import SCHEMES, NotInvertibleError, get_scheme
from tests.reference import fitted_order, force_torch, reference_solution

X0 = np.array([0.5, -1.0])
V0 = np.array([0.3, 0.2])
EPS, T = 0.5, 1.0
STEPS = {1: [32, 64, 128, 256, 512], 2: [16, 32, 64, 128, 256], 4: [8, 16, 32, 64, 128]}


def global_error(scheme, steps, eps=EPS):
    x_ref, v_ref = reference_solution(X0, V0, eps, T)
    x0 = torch.tensor(X0)
    v0 = None if eps == 0 else torch.tensor(V0)
    x, v = mode.integrate(force_torch, x0, v0, eps=eps, T=T, steps=steps, scheme=scheme)
    err = np.abs(x.numpy() - x_ref).max()
    return err if eps == 0 else max(err, np.abs(v.numpy() - v_ref).max())


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_declared_order_against_scipy(name):
    scheme = SCHEMES[name]
    steps = STEPS[scheme.order]
    slope = fitted_order(steps, [global_error(name, L) for L in steps])
    assert abs(slope - scheme.order) <= 0.1, f"{name}: measured order {slope:.3f}, declared {scheme.order}"


@pytest.mark.parametrize("name", ["euler", "heun", "rk4"])
def test_runge_kutta_keeps_its_order_on_the_first_order_model(name):
    steps = STEPS[SCHEMES[name].order]
    slope = fitted_order(steps, [global_error(name, L, eps=0) for L in steps])
    assert abs(slope - SCHEMES[name].order) <= 0.1


def random_field(seed, d):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, d, generator=g, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    return lambda x, t: torch.tanh(x @ W.T + b) * torch.cos(t) + 0.1 * x**2


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(["momentum", "exp-momentum", "leapfrog"]),
    seed=st.integers(0, 2**31 - 1),
    eps=st.floats(0.05, 5.0),
    ratio=st.floats(0.01, 0.9),
    d=st.integers(1, 6),
)
def test_inverse_undoes_step(name, seed, eps, ratio, d):
    f = random_field(seed, d)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(4, d, generator=g, dtype=torch.float64)
    v = torch.randn(4, d, generator=g, dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    h = ratio * eps  # momentum needs h <= eps (gamma = 1 - h/eps >= 0); ratio <= 0.9 keeps gamma >= 0.1
    scheme = SCHEMES[name]
    x1, v1 = scheme.step(f, x, v, t, h, eps)
    assert not torch.equal(x1, x)
    xr, vr = scheme.inverse(f, x1, v1, t, h, eps)
    torch.testing.assert_close(xr, x, rtol=0, atol=1e-12)
    torch.testing.assert_close(vr, v, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["euler", "heun", "rk4"])
def test_non_invertible_schemes_refuse(name):
    x = torch.zeros(3)
    with pytest.raises(NotInvertibleError, match="no closed-form inverse"):
        SCHEMES[name].inverse(torch.tanh, x, x, 0.0, 0.1, 1.0)


@pytest.mark.parametrize("name", ["momentum", "exp-momentum", "leapfrog"])
def test_eps_zero_has_no_inverse(name):
    x = torch.zeros(3)
    with pytest.raises(NotInvertibleError):
        SCHEMES[name].inverse(torch.tanh, x, x, 0.0, 0.1, 0.0)


def test_gamma_zero_is_exactly_the_resnet_rule():
    f = random_field(0, 3)
    x = torch.randn(5, 3, dtype=torch.float64)
    v = torch.randn(5, 3, dtype=torch.float64)
    h = 0.25
    t = torch.tensor(0.0, dtype=torch.float64)
    expected = x + h * f(x, t)
    # gamma = 1 - h/eps = 0 at eps = h, and the eps -> 0 limit
    for eps in (h, 0.0):
        x1, _ = SCHEMES["momentum"].step(f, x, v if eps else None, t, h, eps)
        assert torch.equal(x1, expected)
    xs, _ = mode.integrate(f, x, eps=0, T=1.0, steps=4)
    y = x
    for n in range(4):
        y = y + h * f(y, torch.tensor(n * h, dtype=torch.float64))
    assert torch.equal(xs, y)


def test_momentum_step_refuses_h_beyond_eps():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="exceeds eps"):
        SCHEMES["momentum"].step(torch.tanh, x, x, 0.0, 0.5, 0.1)


def test_registry_lookup():
    assert get_scheme("rk4").order == 4
    assert get_scheme(SCHEMES["heun"]) is SCHEMES["heun"]
    with pytest.raises(ValueError, match="scheme must be one of"):
        get_scheme("midpoint")
    assert {n: (s.order, s.invertible) for n, s in SCHEMES.items()} == {
        "momentum": (1, True),
        "exp-momentum": (1, True),
        "euler": (1, False),
        "leapfrog": (2, True),
        "heun": (2, False),
        "rk4": (4, False),
    }
