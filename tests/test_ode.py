import math

import pytest
import torch

import mode
from mode.ode import as_vector_field, check_gamma, check_state


def test_gamma_eps_step_round_trip():
    for gamma in (0.0, 0.1, 0.5, 0.9, 0.99):
        for step in (1.0, 0.1, 1 / 7):
            eps = mode.eps_from_gamma(gamma, step)
            assert math.isclose(mode.gamma_from_eps(eps, step), gamma, rel_tol=0, abs_tol=1e-15)


def test_paper_form_has_unit_step():
    assert mode.eps_from_gamma(0.9) == pytest.approx(10.0)
    assert mode.gamma_from_eps(10.0, 1.0) == pytest.approx(0.9)


def test_depth_horizon_step():
    assert mode.step_from_depth(2.0, 8) == 0.25
    assert mode.depth_from_step(2.0, 0.25) == 8
    with pytest.raises(ValueError, match="T / step"):
        mode.depth_from_step(1.0, 0.3)


def test_eps_zero_is_the_resnet_limit():
    assert mode.gamma_from_eps(0, 0.1) == 0.0


@pytest.mark.parametrize("gamma", [-0.1, 1.0, 1.5, float("nan")])
def test_gamma_outside_range(gamma):
    with pytest.raises(ValueError, match="gamma"):
        check_gamma(gamma)


def test_bad_parameters_name_themselves():
    with pytest.raises(ValueError, match="eps"):
        mode.gamma_from_eps(-1.0, 0.1)
    with pytest.raises(ValueError, match="exceeds eps"):
        mode.gamma_from_eps(0.1, 0.2)
    with pytest.raises(ValueError, match="step"):
        mode.eps_from_gamma(0.5, 0.0)
    with pytest.raises(ValueError, match="depth"):
        mode.step_from_depth(1.0, 0)
    with pytest.raises(TypeError, match="depth"):
        mode.step_from_depth(1.0, 2.5)
    with pytest.raises(TypeError, match="gamma"):
        check_gamma("0.5")


def test_state_validation():
    x0 = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="v0"):
        check_state(x0, torch.zeros(3, 2), eps=1.0)
    with pytest.raises(ValueError, match="v0"):
        check_state(x0, torch.zeros(2, 3), eps=0.0)
    with pytest.raises(TypeError, match="x0"):
        check_state(torch.zeros(2, dtype=torch.long), None, eps=1.0)
    assert torch.equal(check_state(x0, None, eps=1.0), torch.zeros(2, 3))


def test_vector_field_calling_convention():
    t = torch.tensor(2.0)
    x = torch.ones(3)
    assert torch.equal(as_vector_field(torch.tanh)(x, t), torch.tanh(x))
    assert torch.equal(as_vector_field(lambda x: 2 * x)(x, t), 2 * x)
    assert torch.equal(as_vector_field(lambda x, t: t * x)(x, t), 2 * x)

    class Timed(torch.nn.Module):
        def forward(self, x, t):
            return t * x

    assert torch.equal(as_vector_field(Timed())(x, t), 2 * x)
    assert torch.equal(as_vector_field(torch.nn.Identity())(x, t), x)
    a = 3.0
    assert torch.equal(as_vector_field(lambda x, a=a: a * x)(x, t), 3 * x), "a default is not time"
    assert torch.equal(as_vector_field(lambda *args: args[0] * len(args))(x, t), x), "*args gets x alone"
    field = as_vector_field(torch.tanh)
    assert as_vector_field(field) is field
    with pytest.raises(TypeError, match="f must be a callable"):
        as_vector_field(3)
    assert torch.equal(as_vector_field(lambda x=None: 2 * x)(x, t), 2 * x), "a defaulted state is not time"
    # callables that neither f(x) nor f(x, t) can call are refused when wrapped, not at the first step
    for never in (lambda: x, lambda x, t, s: x):
        with pytest.raises(TypeError, match=r"^f must be called as f\(x\) or f\(x, t\), but it takes"):
            as_vector_field(never)


def test_acceleration_form_is_the_same_model():
    g = lambda x: -torch.sin(x)  # noqa: E731
    x0 = torch.tensor([0.4, -1.0], dtype=torch.float64)
    eps = 0.3
    a = mode.integrate(mode.from_acceleration(g, eps), x0, eps=eps, steps=50, scheme="rk4")
    b = mode.integrate(lambda x: -eps * torch.sin(x), x0, eps=eps, steps=50, scheme="rk4")
    torch.testing.assert_close(a, b, rtol=0, atol=1e-15)
