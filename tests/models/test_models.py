"""The continuous-time models of :mod:`mode.models`: equivalences between them, exact solutions, both
backprop modes and their gradients, learned positive coefficients and argument validation."""

import pytest
import torch

import mode
from mode.models import ANODE, GHBNODE, HBNODE, NODE, SONODE, ModelOutput, MomentumODE

TIGHT = dict(rtol=1e-10, atol=1e-12)
MODEL_NAMES = ["NODE", "ANODE", "SONODE", "HBNODE", "GHBNODE", "MomentumODE"]
D, BATCH = 3, 4


def mlp(d_in: int = D, d_out: int = D) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(d_in, d_out), torch.nn.Tanh()).double()


class Damped(torch.nn.Module):
    """``f(x, v) = (g(x) - v) / eps``: SONODE's form of the momentum ODE."""

    def __init__(self, g: torch.nn.Module, eps: float) -> None:
        super().__init__()
        self.g, self.eps = g, eps

    def forward(self, x, v):
        return (self.g(x) - v) / self.eps


class Scaled(torch.nn.Module):
    def __init__(self, g: torch.nn.Module, scale: float) -> None:
        super().__init__()
        self.g, self.scale = g, scale

    def forward(self, x):
        return self.scale * self.g(x)


class Clock(torch.nn.Module):
    """``f(h, t) = t``, so that ``h(T) = h(0) + T^2 / 2``."""

    def forward(self, h, t):
        return torch.ones_like(h) * t


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.randn(BATCH, D, dtype=torch.float64)


def all_models(**kwargs):
    """One of each model on a small MLP, with every learned coefficient and initial-state module on."""
    torch.manual_seed(1)
    return [
        NODE(mlp(), **kwargs),
        ANODE(mlp(D + 2, D + 2), augment_dim=2, **kwargs),
        SONODE(Damped(mlp(), 0.7), initial_velocity=torch.nn.Linear(D, D).double(), **kwargs),
        HBNODE(mlp(), xi=0.3, initial_momentum=torch.nn.Linear(D, D).double(), **kwargs).double(),
        GHBNODE(mlp(), gamma=0.3, xi=0.1, **kwargs).double(),
        MomentumODE(mlp(), eps=0.4, learn_eps=True, **kwargs).double(),
    ]


def test_sonode_with_damped_field_is_the_momentum_ode(x):
    eps = 0.5
    g = mlp()
    sonode = SONODE(Damped(g, eps), initial_velocity=None, **TIGHT)(x)
    momentum = MomentumODE(g, eps=eps, **TIGHT)(x)
    torch.testing.assert_close(sonode.prediction, momentum.prediction, rtol=0, atol=1e-9)
    torch.testing.assert_close(sonode.state[1], momentum.state[1], rtol=0, atol=1e-9)


def test_momentum_ode_is_the_phase_space_system_of_odeint(x):
    g = mlp()
    model = MomentumODE(g, eps=0.3, **TIGHT)(x)
    solution = mode.odeint(g, x, eps=0.3, **TIGHT)
    torch.testing.assert_close(model.state, (solution.x, solution.v), rtol=0, atol=1e-12)
    assert model.nfe_forward == solution.nfe_forward


def test_hbnode_with_fixed_damping_is_the_momentum_ode(x):
    gamma = 2.5
    g = mlp()
    hb = HBNODE(g, gamma=gamma, learn_gamma=False, **TIGHT)(x)
    # m' = -gamma m + f  <=>  eps m' + m = eps f with eps = 1 / gamma.
    momentum = MomentumODE(Scaled(g, 1 / gamma), eps=1 / gamma, **TIGHT)(x)
    torch.testing.assert_close(hb.state, momentum.state, rtol=0, atol=1e-8)


def test_ghbnode_with_identity_activation_is_hbnode(x):
    g = mlp()
    hb = HBNODE(g, xi=0.2, **TIGHT).double()(x)
    ghb = GHBNODE(g, xi=0.2, activation=torch.nn.Identity(), **TIGHT).double()(x)
    torch.testing.assert_close(ghb.state, hb.state, rtol=0, atol=1e-12)


def test_node_on_a_linear_field_is_the_matrix_exponential(x):
    torch.manual_seed(2)
    linear = torch.nn.Linear(D, D, bias=False).double()
    T = 1.3
    out = NODE(linear, T=T, **TIGHT)(x)
    # Rows are states: h' = h A^T, so h(T) = h(0) exp(T A)^T.
    exact = x @ torch.linalg.matrix_exp(T * linear.weight.detach()).T
    torch.testing.assert_close(out.prediction, exact, rtol=0, atol=1e-8)
    assert isinstance(out, ModelOutput) and out.state[0] is out.prediction


def test_time_dependent_field_receives_the_time(x):
    out = NODE(Clock(), T=2.0, **TIGHT)(x)
    torch.testing.assert_close(out.prediction, x + 2.0, rtol=0, atol=1e-10)


def test_anode_starts_at_zero_and_reads_out_the_augmented_state(x):
    field = mlp(D + 2, D + 2)
    model = ANODE(field, augment_dim=2, readout=torch.nn.Linear(D + 2, 1).double(), **TIGHT)
    (z0,) = model.initial_state(x)
    assert torch.equal(z0[..., :D], x) and torch.equal(z0[..., D:], torch.zeros(BATCH, 2, dtype=x.dtype))
    out = model(x)
    assert out.state[0].shape == (BATCH, D + 2) and out.prediction.shape == (BATCH, 1)
    torch.testing.assert_close(out.prediction, model.readout(out.state[0]))
    model.readout = None
    assert model(x).prediction.shape == (BATCH, D)


def test_anode_without_augmentation_is_node(x):
    g = mlp()
    torch.testing.assert_close(ANODE(g, augment_dim=0, **TIGHT)(x).state, NODE(g, **TIGHT)(x).state)


def _gradients(model, x):
    model.zero_grad()
    x = x.clone().requires_grad_(True)
    out = model(x)
    (out.prediction.sin().sum() + out.state[-1].square().sum()).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    return [x.grad.clone(), *grads]


def test_hbnode_adjoint_gradients_equal_direct_backprop(x):
    torch.manual_seed(3)
    model = HBNODE(
        mlp(), xi=0.3, initial_momentum=torch.nn.Linear(D, D).double(), readout=torch.nn.Linear(D, 2).double()
    ).double()
    model.rtol, model.atol = 1e-10, 1e-12
    direct = _gradients(model, x)
    assert model.nfe_backward == 0
    model.backprop = "adjoint"
    adjoint = _gradients(model, x)
    assert model.nfe_backward > 0
    assert model.gamma_raw is not None and model.gamma_raw.grad.abs() > 0
    for a, b in zip(adjoint, direct, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("index", range(len(MODEL_NAMES)), ids=MODEL_NAMES)
def test_adjoint_gradients_equal_direct_backprop_for_every_model(x, index):
    model = all_models(**TIGHT)[index]
    direct = _gradients(model, x)
    model.backprop = "adjoint"
    adjoint = _gradients(model, x)
    assert model.nfe_backward > 0
    for a, b in zip(adjoint, direct, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_adjoint_parameters_leave_out_the_initial_state_and_readout():
    model = SONODE(Damped(mlp(), 1.0), initial_velocity=torch.nn.Linear(D, D), readout=torch.nn.Linear(D, 1))
    ids = {id(p) for p in model.dynamics_parameters()}
    assert ids == {id(p) for p in model.field.parameters()}
    momentum = MomentumODE(mlp(), learn_eps=True, readout=torch.nn.Linear(D, 1))
    assert {id(p) for p in momentum.dynamics_parameters()} == {
        id(momentum.eps_raw),
        *(id(p) for p in momentum.field.parameters()),
    }


@pytest.mark.parametrize("index", range(len(MODEL_NAMES)), ids=MODEL_NAMES)
def test_gradcheck_fixed_step(index):
    """With rk4 at a fixed step the solve is a smooth fixed function, so finite differences apply."""
    models = all_models(T=0.5, method="rk4", options={"step_size": 0.125})
    model = models[index]
    torch.manual_seed(4)
    x = torch.randn(2, D, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: model(x).prediction, (x,))
    scalars = {name: p for name, p in model.named_parameters() if name in ("gamma_raw", "eps_raw")}
    for name, p in scalars.items():

        def of_scalar(value, name=name):
            return torch.func.functional_call(model, {name: value}, (x.detach(),)).prediction

        assert torch.autograd.gradcheck(of_scalar, (p.detach().clone().requires_grad_(True),))


def test_learned_coefficients_stay_positive_and_get_gradients(x):
    momentum = MomentumODE(mlp(), eps=0.2, learn_eps=True).double()
    hb = HBNODE(mlp(), gamma=0.9, gamma_max=2.0).double()
    assert momentum.eps.item() == pytest.approx(0.2) and hb.gamma.item() == pytest.approx(0.9)
    for model, raw in ((momentum, momentum.eps_raw), (hb, hb.gamma_raw)):
        model(x).prediction.square().sum().backward()
        assert raw.grad is not None and raw.grad.abs() > 0
    with torch.no_grad():
        momentum.eps_raw.fill_(-40.0)
        hb.gamma_raw.fill_(-40.0)
    assert momentum.eps > 0 and hb.gamma > 0
    with torch.no_grad():
        hb.gamma_raw.fill_(40.0)
    assert hb.gamma <= 2.0
    assert MomentumODE(mlp(), eps=50.0, learn_eps=True).eps.item() == pytest.approx(50.0)


def test_nfe_counts_the_field_evaluations(x):
    calls = []

    class Counted(torch.nn.Module):
        def forward(self, h):
            calls.append(1)
            return -h

    out = NODE(Counted())(x)
    assert out.nfe_forward == len(calls) > 0


BAD = [
    (NODE, dict(backprop="reversible"), ValueError, "backprop"),
    (NODE, dict(T=0.0), ValueError, "T"),
    (NODE, dict(T=-1.0), ValueError, "T"),
    (NODE, dict(method="euler2"), ValueError, "method"),
    (NODE, dict(rtol=0.0), ValueError, "rtol"),
    (NODE, dict(atol=-1e-9), ValueError, "atol"),
    (NODE, dict(options=[("step_size", 0.1)]), TypeError, "options"),
    (NODE, dict(readout="linear"), TypeError, "readout"),
    (ANODE, dict(augment_dim=-1), ValueError, "augment_dim"),
    (ANODE, dict(augment_dim=1.5), TypeError, "augment_dim"),
    (MomentumODE, dict(eps=0.0), ValueError, "eps"),
    (MomentumODE, dict(eps=-0.5), ValueError, "eps"),
    (MomentumODE, dict(learn_eps="yes"), TypeError, "learn_eps"),
    (MomentumODE, dict(initial_velocity=torch.zeros), TypeError, "initial_velocity"),
    (HBNODE, dict(xi=-0.1), ValueError, "xi"),
    (HBNODE, dict(gamma=1.5), ValueError, "gamma"),
    (HBNODE, dict(gamma=0.0), ValueError, "gamma"),
    (HBNODE, dict(gamma=-1.0, learn_gamma=False), ValueError, "gamma"),
    (HBNODE, dict(gamma_max=0.0), ValueError, "gamma_max"),
    (HBNODE, dict(gamma=float("nan")), ValueError, "gamma"),
    (GHBNODE, dict(activation=3), TypeError, "activation"),
]


@pytest.mark.parametrize(("cls", "kwargs", "error", "name"), BAD)
def test_bad_arguments_raise_naming_the_parameter(cls, kwargs, error, name):
    with pytest.raises(error, match=rf"^{name} must"):
        cls(mlp(), **kwargs)


def test_bad_fields_and_inputs_raise(x):
    with pytest.raises(TypeError, match="^field must be a torch.nn.Module"):
        NODE(torch.tanh)
    with pytest.raises(TypeError, match=r"^field must be called as field\(x, v\)"):
        SONODE(mlp(), initial_velocity=None)
    with pytest.raises(TypeError, match="initial_velocity"):
        SONODE(Damped(mlp(), 1.0))
    with pytest.raises(TypeError, match="^x must"):
        NODE(mlp())(x.to(torch.int64))
    with pytest.raises(TypeError, match="float32 or float64"):
        NODE(mlp())(x.half())
    with pytest.raises(ValueError, match="shape"):
        NODE(mlp(D, 1))(x)
    with pytest.raises(ValueError, match=r"initial_velocity\(x\)"):
        MomentumODE(mlp(), initial_velocity=torch.nn.Linear(D, 1).double())(x)


def test_backprop_is_checked_when_switched_after_construction():
    model = HBNODE(mlp())
    model.backprop = "adjoint"
    assert model.backprop == "adjoint" and "backprop='adjoint'" in repr(model)
    with pytest.raises(ValueError, match="^backprop must be one of"):
        model.backprop = "reversible"
    assert model.backprop == "adjoint"


def test_trajectory_of_a_linear_node_is_the_matrix_exponential_at_every_time(x):
    torch.manual_seed(2)
    linear = torch.nn.Linear(D, D, bias=False).double()
    times = torch.tensor([0.0, 0.4, 1.1, 2.0], dtype=torch.float64)
    out = NODE(linear, **TIGHT).trajectory(x, times)
    assert out.prediction.shape == (len(times), BATCH, D) and out.state[0] is out.prediction
    for k, t in enumerate(times):
        exact = x @ torch.linalg.matrix_exp(t * linear.weight.detach()).T
        torch.testing.assert_close(out.prediction[k], exact, rtol=0, atol=1e-8)


@pytest.mark.parametrize("index", range(len(MODEL_NAMES)), ids=MODEL_NAMES)
def test_trajectory_ends_where_forward_ends_and_starts_at_the_initial_state(x, index):
    # The adaptive steps do not depend on the output grid, so the end point is the forward's to rounding.
    model = all_models(**TIGHT)[index]
    model.readout = torch.nn.Linear(model.readout_input(model.initial_state(x)).shape[-1], 2).double()
    times = torch.linspace(0.0, model.T, 5, dtype=torch.float64)
    path = model.trajectory(x, times)
    final = model(x)
    assert path.prediction.shape == (len(times), BATCH, 2)
    torch.testing.assert_close(path.prediction[-1], final.prediction, rtol=0, atol=1e-12)
    torch.testing.assert_close(tuple(s[0] for s in path.state), model.initial_state(x), rtol=0, atol=0)
    assert path.nfe_forward == final.nfe_forward


def test_trajectory_adjoint_gradients_equal_direct_backprop(x):
    model = all_models(**TIGHT)[3]  # HBNODE: learned damping and an initial-momentum module
    times = torch.tensor([0.0, 0.3, 0.8, 1.5], dtype=torch.float64)

    def gradients():
        model.zero_grad()
        model.trajectory(x, times).prediction.sin().sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    direct = gradients()
    assert model.nfe_backward == 0
    model.backprop = "adjoint"
    adjoint = gradients()
    assert model.nfe_backward > 0
    for a, b in zip(adjoint, direct, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_trajectory_refuses_bad_times(x):
    model = NODE(mlp())
    with pytest.raises(TypeError, match="^times must"):
        model.trajectory(x, [0.0, 1.0])
    with pytest.raises(TypeError, match="^times must"):
        model.trajectory(x, torch.arange(3))
    for times in ([0.0], [0.0, 1.0, 1.0], [1.0, 0.0], [[0.0, 1.0]]):
        with pytest.raises(ValueError, match="^times must"):
            model.trajectory(x, torch.tensor(times, dtype=torch.float64))
