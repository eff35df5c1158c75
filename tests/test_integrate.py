import numpy as np
import pytest
import torch

import mode
from tests.reference import fitted_order, force_torch, reference_solution

X0 = torch.tensor([[0.5, -1.0]], dtype=torch.float64)


def test_momentum_converges_at_first_order_to_torchdiffeq():
    eps, T = 0.5, 1.0
    ref = mode.odeint(force_torch, X0, eps=eps, T=T, rtol=1e-12, atol=1e-12)
    depths = [16, 32, 64, 128, 256]
    errors = []
    for L in depths:
        x, v = mode.integrate(force_torch, X0, eps=eps, T=T, steps=L, scheme="momentum")
        errors.append(max((x - ref.x).abs().max().item(), (v - ref.v).abs().max().item()))
    assert abs(fitted_order(depths, errors) - 1.0) <= 0.1


def test_torchdiffeq_agrees_with_scipy():
    x_ref, v_ref = reference_solution(X0[0].numpy(), np.zeros(2), 0.5, 1.0)
    sol = mode.odeint(force_torch, X0, eps=0.5, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sol.x[0].numpy(), x_ref, atol=1e-9)
    np.testing.assert_allclose(sol.v[0].numpy(), v_ref, atol=1e-9)


def test_second_order_tends_to_first_order_at_rate_eps():
    first = mode.odeint(force_torch, X0, eps=0.0, rtol=1e-12, atol=1e-12).x
    epss = [0.04, 0.02, 0.01, 0.005]
    gaps = []
    for eps in epss:
        # v0 = f(x0): the slow manifold, so the gap is the O(eps) drift and not an initial layer
        v0 = force_torch(X0, torch.tensor(0.0, dtype=torch.float64))
        x = mode.odeint(force_torch, X0, v0, eps=eps, rtol=1e-12, atol=1e-12).x
        gaps.append((x - first).abs().max().item())
    rate = np.polyfit(np.log(epss), np.log(gaps), 1)[0]
    assert abs(rate - 1.0) <= 0.1, rate


def test_trajectory_shape_and_endpoints():
    xs, vs = mode.integrate(force_torch, X0, eps=1.0, steps=10, return_trajectory=True)
    x, v = mode.integrate(force_torch, X0, eps=1.0, steps=10)
    assert xs.shape == (11, 1, 2) and vs.shape == (11, 1, 2)
    assert torch.equal(xs[0], X0) and torch.equal(xs[-1], x) and torch.equal(vs[-1], v)


def test_works_on_any_shape_and_module_fields():
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    x0 = torch.randn(2, 3, 5, 5)
    x, v = mode.integrate(conv, x0, eps=1.0, steps=4, scheme="leapfrog")
    assert x.shape == x0.shape and v.shape == x0.shape
    x.sum().backward()
    assert conv.weight.grad is not None


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        mode.integrate(force_torch, X0, eps=1.0, steps=0)
    with pytest.raises(ValueError, match="eps"):
        mode.integrate(force_torch, X0, eps=-0.1, steps=4)
    with pytest.raises(ValueError, match="v0"):
        mode.integrate(force_torch, X0, torch.zeros(2, 2, dtype=torch.float64), eps=1.0, steps=4)
    with pytest.raises(ValueError, match="T"):
        mode.integrate(force_torch, X0, eps=1.0, steps=4, T=0)
    with pytest.raises(ValueError, match="exceeds eps"):
        mode.integrate(force_torch, X0, eps=0.1, steps=4, scheme="momentum")
