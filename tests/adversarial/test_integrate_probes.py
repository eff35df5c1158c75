"""Hostile inputs to the solvers: ``integrate``, ``odeint``, the scheme lookup and ``Scheme.step``.

Each probe asserts a correct result or an error that names the argument, what was expected and the fix.
"""

import pytest
import torch

import mode
from mode.schemes import SCHEMES, get_scheme

X = torch.ones(3)
CALL_ORDER = r"f\(x, t\).*f\(t, x\)"


def _integrate(f, x=X, scheme="momentum", eps=0.5):
    return mode.integrate(f, x, eps=eps, T=1.0, steps=10, scheme=scheme)


# -- the first value of f ----------------------------------------------------------------------------------


def test_integrate_refuses_a_scalar_force():
    with pytest.raises(ValueError, match=r"f must return a tensor of the shape .* expected \(3,\), got \(\)"):
        _integrate(lambda x: x.sum())


@pytest.mark.parametrize("eps", [0.5, 0.0])
def test_integrate_refuses_a_force_with_an_extra_dimension(eps):
    with pytest.raises(ValueError, match=r"expected \(3,\), got \(2, 3\).*" + CALL_ORDER):
        _integrate(lambda x: x.expand(2, 3), scheme="rk4", eps=eps)


def test_integrate_names_the_call_order_for_a_torchdiffeq_style_field():
    # Called as f(x, t), this returns the 0-d time where a state of shape (2, 3) is due.
    with pytest.raises(ValueError, match=r"shape.*got \(\).*torchdiffeq-style f\(t, x\)"):
        _integrate(lambda t, x: -x, x=torch.ones(2, 3))


def test_integrate_refuses_a_force_of_another_dtype():
    with pytest.raises(ValueError, match=r"dtype .* expected torch.float32, got torch.float64"):
        _integrate(lambda x: -x.double())


def test_integrate_refuses_a_force_on_another_device():
    with pytest.raises(ValueError, match=r"device .* expected meta, got cpu"):
        _integrate(lambda x: torch.zeros(3), x=torch.ones(3, device="meta"))


def test_integrate_refuses_a_force_that_is_not_a_tensor():
    with pytest.raises(TypeError, match=r"f must return a torch.Tensor, got float.*" + CALL_ORDER):
        _integrate(lambda x: 1.0)


def test_scheme_step_checks_the_force_too():
    with pytest.raises(ValueError, match=r"shape .* expected \(3,\), got \(\)"):
        SCHEMES["leapfrog"].step(lambda x: x.sum(), X, None, 0.0, 0.1, 0.5)


def test_integrate_checks_the_first_evaluation_once():
    calls = []

    def f(x):
        calls.append(x)
        return -x

    expected, _ = _integrate(lambda x: -x)
    x, _ = _integrate(f)
    assert len(calls) == 10
    assert torch.equal(x, expected)


@pytest.mark.parametrize("eps", [0.5, 0.0])
def test_odeint_refuses_a_misshapen_force(eps):
    with pytest.raises(ValueError, match=r"expected \(3,\), got \(2, 3\).*" + CALL_ORDER):
        mode.odeint(lambda x: x.expand(2, 3), X, eps=eps, method="rk4", options={"step_size": 0.1})


def test_odeint_refuses_a_scalar_force():
    with pytest.raises(ValueError, match=r"expected \(3,\), got \(\)"):
        mode.odeint(lambda x: x.sum(), X, eps=0.5)


# -- odeint's times and dtypes -----------------------------------------------------------------------------


def test_odeint_refuses_a_horizon_that_t_would_override():
    with pytest.raises(ValueError, match=r"T = 5.0 and t \(ending at 1.0\) are both given and disagree"):
        mode.odeint(lambda x: -x, X, eps=0.5, T=5.0, t=torch.tensor([0.0, 1.0]))


def test_odeint_accepts_a_horizon_equal_to_the_last_time():
    t = torch.tensor([0.0, 0.5, 2.0])
    both = mode.odeint(lambda x: -x, X, eps=0.5, T=2.0, t=t)
    only_t = mode.odeint(lambda x: -x, X, eps=0.5, t=t)
    assert torch.equal(both.x, only_t.x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_odeint_refuses_half_precision(dtype):
    with pytest.raises(TypeError, match=r"x0 must be float32 or float64 for odeint, got torch\.b?float16"):
        mode.odeint(lambda x: -x, X.to(dtype), eps=0.5)


def test_integrate_still_takes_half_precision():
    x, _ = mode.integrate(lambda x: -x, X.half(), eps=0.5, T=1.0, steps=10, scheme="leapfrog")
    reference, _ = mode.integrate(lambda x: -x, X, eps=0.5, T=1.0, steps=10, scheme="leapfrog")
    assert x.dtype == torch.float16
    torch.testing.assert_close(x.float(), reference, rtol=1e-2, atol=0)


# -- odeint's adjoint and closures -------------------------------------------------------------------------


def test_adjoint_refuses_a_closure_parameter_it_cannot_see():
    w = torch.full((3,), 0.5, requires_grad=True)
    with pytest.raises(ValueError, match=r"requires? grad.*adjoint_params=.*nn\.Module"):
        mode.odeint(lambda x: -w * x, X, eps=0.5, adjoint=True)


def test_adjoint_with_adjoint_params_matches_direct_backpropagation():
    w = torch.full((3,), 0.5, requires_grad=True)
    grads = []
    for adjoint, params in ((False, None), (True, [w])):
        solution = mode.odeint(lambda x: -w * x, X, eps=0.5, adjoint=adjoint, adjoint_params=params)
        grads.append(torch.autograd.grad(solution.x.sum(), w)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def test_adjoint_without_hidden_parameters_is_not_refused_nor_miscounted():
    x0 = torch.ones(3, requires_grad=True)
    direct = mode.odeint(torch.sin, x0, eps=0.5)
    adjoint = mode.odeint(torch.sin, x0, eps=0.5, adjoint=True)
    assert adjoint.nfe_forward == direct.nfe_forward
    with torch.no_grad():  # nothing to differentiate: a closure parameter is harmless
        w = torch.ones(3, requires_grad=True)
        mode.odeint(lambda x: -w * x, X, eps=0.5, adjoint=True)


# -- the scheme lookup -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", [["rk4"], {"rk4": 1}, 4])
def test_scheme_of_the_wrong_type_lists_the_names(scheme):
    with pytest.raises(
        TypeError, match=r"scheme must be a name, one of \[.*'momentum'.*'rk4'\], or a Scheme"
    ):
        get_scheme(scheme)
    with pytest.raises(TypeError, match=r"scheme must be a name"):
        _integrate(lambda x: -x, scheme=scheme)


def test_unknown_scheme_name_lists_the_names():
    with pytest.raises(ValueError, match=r"scheme must be one of \[.*'leapfrog'.*\], got 'rk5'"):
        get_scheme("rk5")


# -- Scheme.step and Scheme.inverse with a missing or misshapen velocity -----------------------------------


@pytest.mark.parametrize("eps", [0.5, 0.0])
@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_step_without_velocity_starts_at_rest(name, eps):
    scheme, f = SCHEMES[name], torch.sin
    x0 = torch.tensor([0.5, -1.0], dtype=torch.float64)
    for a, b in zip(
        scheme.step(f, x0, None, 0.0, 0.1, eps),
        scheme.step(f, x0, torch.zeros_like(x0), 0.0, 0.1, eps),
        strict=True,
    ):
        assert torch.equal(a, b)
    # integrate's v0=None is the same convention
    x, _ = mode.integrate(f, x0, eps=eps, T=0.1, steps=1, scheme=name)
    assert torch.equal(x, scheme.step(f, x0, None, 0.0, 0.1, eps)[0])


@pytest.mark.parametrize("name", ["momentum", "exp-momentum", "leapfrog"])
def test_inverse_without_velocity_is_the_inverse_at_rest(name):
    scheme, f = SCHEMES[name], torch.sin
    x1 = torch.tensor([0.5, -1.0], dtype=torch.float64)
    for a, b in zip(
        scheme.inverse(f, x1, None, 0.0, 0.1, 0.5),
        scheme.inverse(f, x1, torch.zeros_like(x1), 0.0, 0.1, 0.5),
        strict=True,
    ):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("momentum", "step"),
        ("momentum", "inverse"),
        ("leapfrog", "step"),
        ("leapfrog", "inverse"),
        ("rk4", "step"),
    ],
)
def test_step_refuses_a_velocity_of_another_shape(name, method):
    shape = r"v must have the shape of x \(3,\), got \(2,\).*None for zero velocity"
    with pytest.raises(ValueError, match=shape):
        getattr(SCHEMES[name], method)(torch.sin, X, torch.ones(2), 0.0, 0.1, 0.5)


def test_step_refuses_a_velocity_that_is_not_a_tensor():
    with pytest.raises(TypeError, match=r"v must be a torch.Tensor or None \(zero velocity\), got list"):
        SCHEMES["momentum"].step(torch.sin, X, [0.0, 0.0, 0.0], 0.0, 0.1, 0.5)


def test_step_refuses_a_velocity_of_another_dtype():
    with pytest.raises(ValueError, match=r"v must match x's dtype and device"):
        SCHEMES["momentum"].step(torch.sin, X, X.double(), 0.0, 0.1, 0.5)
