"""mode.odeint with a scheme of mode.SCHEMES: checkpointed and exactly reversible solves give the gradient
of the discrete solve, which autograd through the same steps computes directly."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mode
from mode.fixed_step import step_grid

INVERTIBLE = ("momentum", "exp-momentum", "leapfrog")
D = 3


class TimeField(torch.nn.Module):
    """A tanh MLP modulated in time: f(x, t) = W2 tanh(W1 x + b1) cos(t) + b2."""

    def __init__(self, d: int = D, hidden: int = 8, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.w1 = torch.nn.Parameter(torch.randn(hidden, d, generator=generator, dtype=torch.float64))
        self.b1 = torch.nn.Parameter(torch.randn(hidden, generator=generator, dtype=torch.float64))
        self.w2 = torch.nn.Parameter(torch.randn(d, hidden, generator=generator, dtype=torch.float64) / 2)
        self.b2 = torch.nn.Parameter(torch.randn(d, generator=generator, dtype=torch.float64))

    def forward(self, x, t):
        return torch.tanh(x @ self.w1.T + self.b1) @ self.w2.T * torch.cos(t) + self.b2


def _inputs(dtype=torch.float64, batch=4, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.randn(batch, D, generator=generator, dtype=torch.float64).requires_grad_(True)
    v0 = torch.randn(batch, D, generator=generator, dtype=torch.float64).requires_grad_(True)
    return x0, v0


def _loss(sol):
    weights = torch.linspace(-1.0, 2.0, D, dtype=sol.x.dtype)
    return (sol.x**2).sum() + (0.0 if sol.v is None else (sol.v * weights).sum())


def _gradient(f, x0, v0, **kwargs):
    """Output and the gradient of _loss with respect to x0, v0 and f's parameters, flattened."""
    leaves = [x0, *([] if v0 is None else [v0]), *f.parameters()]
    sol = mode.odeint(f, x0, v0, **kwargs)
    grads = torch.autograd.grad(_loss(sol), leaves)
    return sol, torch.cat([g.flatten() for g in grads])


def _rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.mark.parametrize("method", INVERTIBLE)
@pytest.mark.parametrize("with_v0", [True, False])
def test_reversible_gradient_equals_autograd_through_the_same_steps(method, with_v0):
    f = TimeField()
    x0, v0 = _inputs()
    v0 = v0 if with_v0 else None
    kwargs = dict(eps=0.3, T=1.5, method=method, steps=40)
    reference, expected = _gradient(f, x0, v0, backprop="autograd", **kwargs)
    sol, got = _gradient(f, x0, v0, backprop="reversible", **kwargs)
    assert _rel(got, expected) <= 1e-10
    assert _rel(sol.x, reference.x) <= 1e-13 and _rel(sol.v, reference.v) <= 1e-13
    # The backward evaluates f once per sub-step again, to rebuild the states and for the products.
    assert sol.nfe_forward == reference.nfe_forward == 40 * mode.SCHEMES[method].evals_per_step
    assert sol.nfe_backward == sol.nfe_forward and reference.nfe_backward == 0


@pytest.mark.parametrize("method", ["leapfrog", "momentum"])
def test_output_grid_gradients(method):
    f = TimeField(seed=3)
    x0, v0 = _inputs(seed=4)
    t = torch.tensor([0.0, 0.25, 0.5, 1.25], dtype=torch.float64)
    kwargs = dict(eps=0.5, t=t, method=method, options={"step_size": 0.125})
    reference, expected = _gradient(f, x0, v0, backprop="autograd", **kwargs)
    sol, got = _gradient(f, x0, v0, backprop="reversible", **kwargs)
    assert sol.x.shape == (4, 4, D) and torch.equal(sol.x[0], x0) and torch.equal(sol.v[0], v0)
    assert _rel(got, expected) <= 1e-10
    # The output times are reached by the steps of one solve: the same as integrate's trajectory.
    path, velocity = mode.integrate(
        f, x0, v0, eps=0.5, T=1.25, steps=10, scheme=method, return_trajectory=True
    )
    assert torch.equal(reference.x, path[[0, 2, 4, 10]]) and torch.equal(reference.v, velocity[[0, 2, 4, 10]])


@pytest.mark.parametrize("method", sorted(mode.SCHEMES))
@pytest.mark.parametrize("eps", [0.4, 0.0])
def test_checkpoint_equals_autograd_for_every_scheme_and_first_order(method, eps):
    f = TimeField(seed=5)
    x0, v0 = _inputs(seed=6)
    v0 = v0 if eps else None
    kwargs = dict(eps=eps, T=1.0, method=method, steps=17)
    sol, got = _gradient(f, x0, v0, backprop="checkpoint", **kwargs)
    # "euler" and "rk4" are torchdiffeq's methods under autograd: the reference is integrate's scheme.
    x, v = mode.integrate(f, x0, v0, eps=eps, T=1.0, steps=17, scheme=method)
    assert torch.equal(sol.x, x) and (sol.v is None if eps == 0 else torch.equal(sol.v, v))
    leaves = [x0, *([] if v0 is None else [v0]), *f.parameters()]
    loss = (x**2).sum() + (0.0 if eps == 0 else (v * torch.linspace(-1.0, 2.0, D, dtype=v.dtype)).sum())
    expected = torch.cat([g.flatten() for g in torch.autograd.grad(loss, leaves)])
    assert _rel(got, expected) <= 1e-14
    assert sol.nfe_backward == sol.nfe_forward


def test_closure_parameters_are_found_and_adjoint_params_reach_non_leaves():
    x0, v0 = _inputs(seed=7)
    w = torch.randn(D, D, dtype=torch.float64, requires_grad=True)

    def leaf_field(x):
        return torch.tanh(x @ w.T)

    grads = {}
    for backprop in ("autograd", "reversible"):
        sol = mode.odeint(leaf_field, x0, v0, eps=0.7, method="leapfrog", steps=12, backprop=backprop)
        grads[backprop] = torch.autograd.grad(_loss(sol), [w, x0])
    for a, b in zip(grads["reversible"], grads["autograd"], strict=True):
        assert _rel(a, b) <= 1e-10

    def derived(backprop, listed=False):
        scaled = 2.0 * w  # computed before the solve: not a leaf

        def derived_field(x):
            return torch.tanh(x @ scaled.T)

        kwargs = dict(eps=0.7, method="leapfrog", steps=12, backprop=backprop)
        params = {"adjoint_params": [scaled]} if listed else {}
        sol = mode.odeint(derived_field, x0, v0, **kwargs, **params)
        return torch.autograd.grad(_loss(sol), [w])[0]

    with pytest.raises(ValueError, match="adjoint_params"):
        derived("reversible")
    assert _rel(derived("reversible", listed=True), derived("autograd")) <= 1e-10


@pytest.mark.parametrize("method", INVERTIBLE)
def test_float32_reversible_gradient_is_as_accurate_as_float32_autograd(method):
    f64 = TimeField(seed=8)
    f32 = TimeField(seed=8).float()
    x64, v64 = _inputs(seed=9)
    x32, v32 = (t.detach().float().requires_grad_(True) for t in (x64, v64))
    kwargs = dict(eps=0.2, T=2.0, method=method, steps=200)
    _, reference = _gradient(f64, x64, v64, backprop="autograd", **kwargs)
    errors = {}
    for backprop in ("autograd", "reversible"):
        _, got = _gradient(f32, x32, v32, backprop=backprop, **kwargs)
        errors[backprop] = _rel(got.double(), reference)
    assert errors["autograd"] < 1e-4  # the float32 rounding, not a wrong gradient
    assert errors["reversible"] <= 2 * errors["autograd"] + 1e-7, errors


@settings(max_examples=25, deadline=None)
@given(
    method=st.sampled_from(INVERTIBLE),
    eps=st.floats(0.05, 5.0),
    steps=st.integers(1, 30),
    scale=st.sampled_from([1e-6, 1.0, 1e4]),
    seed=st.integers(0, 2**16),
)
def test_property_reversible_gradient_is_the_discrete_gradient(method, eps, steps, scale, seed):
    if method == "momentum":
        steps = max(steps, math.ceil(2.0 / eps))  # gamma = 1 - h/eps >= 1/2
    f = TimeField(seed=seed)
    x0, v0 = _inputs(seed=seed + 1)
    x0 = (x0.detach() * scale).requires_grad_(True)
    kwargs = dict(eps=eps, T=1.0, method=method, steps=steps)
    _, expected = _gradient(f, x0, v0, backprop="autograd", **kwargs)
    _, got = _gradient(f, x0, v0, backprop="reversible", **kwargs)
    assert _rel(got, expected) <= 1e-10


def test_torchdiffeq_fixed_grid_takes_steps():
    f = TimeField(seed=10)
    x0, v0 = _inputs(seed=11)
    a = mode.odeint(f, x0, v0, eps=0.5, method="rk4", steps=8)
    b = mode.odeint(f, x0, v0, eps=0.5, method="rk4", options={"step_size": 0.125})
    assert torch.equal(a.x, b.x) and a.nfe_forward == b.nfe_forward == 32


def test_names_of_both_libraries_are_torchdiffeqs_under_the_adjoint():
    f = TimeField(seed=14)
    x0, v0 = _inputs(seed=15)
    sol = mode.odeint(f, x0, v0, eps=0.5, method="rk4", backprop="adjoint", steps=8)
    reference = mode.odeint(f, x0, v0, eps=0.5, method="rk4", steps=8)
    assert torch.equal(sol.x, reference.x) and sol.nfe_forward == 32
    _loss(sol).backward()
    assert sol.nfe_backward > 0


def test_adjoint_true_is_backprop_adjoint():
    f = TimeField(seed=12)
    x0, v0 = _inputs(seed=13)
    a = mode.odeint(f, x0, v0, eps=0.5, adjoint=True)
    b = mode.odeint(f, x0, v0, eps=0.5, backprop="adjoint")
    _loss(a).backward()
    assert a.nfe_backward > 0 and torch.equal(a.x, b.x)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(eps=0.0, method="leapfrog", backprop="reversible", steps=4), ValueError, "eps > 0"),
        (dict(eps=0.5, method="rk4", backprop="reversible", steps=4), ValueError, "invertible scheme"),
        (dict(eps=0.5, method="heun", backprop="reversible", steps=4), ValueError, "invertible scheme"),
        (dict(eps=0.5, method="dopri5", backprop="reversible"), ValueError, "fixed-step scheme"),
        (dict(eps=0.5, method="leapfrog", backprop="adjoint", steps=4), ValueError, "torchdiffeq method"),
        (dict(eps=0.5, method="dopri5", steps=4), ValueError, "adaptive"),
        (dict(eps=0.5, backprop="exact"), ValueError, "backprop must be one of"),
        (dict(eps=0.5, backprop="reversible", adjoint=True, steps=4), ValueError, "contradicts"),
        (dict(eps=0.5, method="leapfrog", backprop="reversible"), ValueError, "exactly one of steps"),
        (
            dict(eps=0.5, method="leapfrog", backprop="reversible", steps=4, options={"step_size": 0.25}),
            ValueError,
            "exactly one of steps",
        ),
        (
            dict(eps=0.5, method="leapfrog", backprop="checkpoint", options={"step_size": 0.3}),
            ValueError,
            r"t\[1\] = 1.0 is not on the step grid",
        ),
        (
            dict(eps=0.5, method="leapfrog", backprop="checkpoint", steps=4, options={"rtol": 1}),
            ValueError,
            "only 'step_size'",
        ),
        (dict(eps=0.5, method="rk45", steps=4), ValueError, "method must be a torchdiffeq method"),
        (dict(eps=0.5, method="rk45", backprop="adjoint"), ValueError, "method must be a torchdiffeq method"),
        (dict(eps=0.5, method="rk45", backprop="reversible", steps=4), ValueError, "method must be a"),
        (dict(eps=0.5, method=4), TypeError, "method must be a str"),
        (dict(eps=0.1, method="momentum", backprop="reversible", steps=5), ValueError, "exceeds eps"),
    ],
)
def test_invalid_combinations_are_refused(kwargs, error, match):
    x0 = torch.ones(2, D, dtype=torch.float64)
    with pytest.raises(error, match=match):
        mode.odeint(torch.sin, x0, **kwargs)


def test_output_times_must_lie_on_the_grid():
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"t\[1\] = 0.3 is not on the step grid"):
        step_grid(t, 4, None)
    assert step_grid(t, 10, None).stops == (3, 10)
