r"""Learning to optimize: networks whose layers are optimizer iterations must reach the minimizer.

Each layer of each network applies the gradient :math:`\nabla\mathcal L` of a random problem instance
(least squares or :math:`\ell_2`-regularized logistic regression, :math:`x \in \mathbb R^p`), with its own
learned positive scalars (step sizes, stored as logarithms), trained with Adam on random instances and
evaluated on fresh ones:

* ResNet (gradient descent): :math:`x_{i+1} = x_i - \alpha_i \nabla\mathcal L(x_i)`
  (``MomentumNet`` with :math:`\gamma = 0`);
* momentum network (heavy ball): ``MomentumNet`` with :math:`f_i = -\alpha_i \nabla\mathcal L` and
  :math:`\gamma` fixed, :math:`v_{i+1} = \gamma v_i - (1 - \gamma)\alpha_i \nabla\mathcal L(x_i)`,
  :math:`x_{i+1} = x_i + v_{i+1}`;
* RevNet, one additive coupling per layer on :math:`(v, x)`:
  :math:`v_{i+1} = v_i - \alpha_i \nabla\mathcal L(x_i)`, :math:`x_{i+1} = x_i + \beta_i v_{i+1}`;
* leapfrog network, one undamped Stormer-Verlet step per layer for :math:`\ddot x = -\alpha_i \nabla\mathcal
  L(x)` with step :math:`h_i`.

The fixed point of every iteration is the minimizer with zero velocity, :math:`z^* = (x^*, 0)` (:math:`x^*`
for the ResNet). The networks with a velocity start from a random phase-space state :math:`z_0 = (x_0, v_0)
\sim \mathcal N(0, I_{2p})`: an optimizer must converge from any state. RevNet couplings and Verlet steps have
Jacobian determinant 1, so for every instance and every value of their parameters the image of the Gaussian
has density at most :math:`(2\pi)^{-p}`, and by the bathtub principle

.. math:: \mathbb E\,\|z_L - z^*\|^2 \;\ge\; \frac{n}{n + 2} R^2, \qquad
          \frac{\pi^{n/2} R^n}{\Gamma(n/2 + 1)} = (2\pi)^{n/2}, \qquad n = 2p,

(:func:`volume_floor`) at every depth, while the momentum network contracts volume by :math:`\gamma^p` per
layer and converges.

The parameters are learned rather than set to the best constants because an optimizer unrolled as a
network is trained, and per-layer scalars give each network its best schedule at each depth (gradient
descent with learned steps is already accelerated); the volume floor holds for any of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch

from mode.experiments.registry import criterion, experiment
from mode.experiments.training import fit
from mode.nn import MomentumNet
from mode.theory.phase_maps import additive_coupling, split, verlet_map

P, ROWS = 8, 32
RIDGE = 0.1
GAMMA = 0.5
DTYPE = torch.float64
#: Initial per-layer scalars: (alpha,) or (alpha, beta) / (alpha, h).
INIT = {"ResNet": (0.5,), "momentum": (0.5,), "RevNet": (0.5, 1.0), "leapfrog": (0.5, 1.0)}
VOLUME_PRESERVING = ("RevNet", "leapfrog")
NEWTON_STEPS = 30


@dataclass
class Problems:
    """A batch of instances: the gradient of each, its minimizer, and the initial states."""

    gradient: Callable[[torch.Tensor], torch.Tensor]
    minimizer: torch.Tensor
    x0: torch.Tensor
    v0: torch.Tensor


def _matvec(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (A @ x.unsqueeze(-1)).squeeze(-1)


def least_squares(batch: int, generator: torch.Generator) -> Problems:
    r"""Instances :math:`\mathcal L(x) = \|Ax - b\|^2 / (2m)`, :math:`A \in \mathbb R^{m \times p}` Gaussian,
    :math:`b = A\bar x + 0.1\,\xi` (:math:`\bar x, \xi` Gaussian); Hessian spectrum near
    :math:`[(1 - \sqrt{p/m})^2, (1 + \sqrt{p/m})^2]`."""
    A = torch.randn(batch, ROWS, P, generator=generator, dtype=DTYPE)
    b = _matvec(A, torch.randn(batch, P, generator=generator, dtype=DTYPE))
    b = b + 0.1 * torch.randn(batch, ROWS, generator=generator, dtype=DTYPE)
    minimizer = torch.linalg.solve(A.mT @ A, A.mT @ b.unsqueeze(-1)).squeeze(-1)

    def gradient(x):
        return _matvec(A.mT, _matvec(A, x) - b) / ROWS

    return Problems(gradient, minimizer, *_initial_states(batch, generator))


def logistic_regression(batch: int, generator: torch.Generator) -> Problems:
    r"""Instances :math:`\mathcal L(x) = \frac1m \sum_j \log(1 + e^{-y_j a_j^\top x}) + \frac\lambda2\|x\|^2`
    with features :math:`a_j \sim \mathcal N(0, 4I)` and noisy labels of a random linear model; the minimizer
    by Newton's method."""
    A = 2 * torch.randn(batch, ROWS, P, generator=generator, dtype=DTYPE)
    margin = _matvec(A, torch.randn(batch, P, generator=generator, dtype=DTYPE))
    y = torch.sign(margin + torch.randn(batch, ROWS, generator=generator, dtype=DTYPE))

    def gradient(x):
        return -_matvec(A.mT, y * torch.sigmoid(-y * _matvec(A, x))) / ROWS + RIDGE * x

    x = torch.zeros(batch, P, dtype=DTYPE)
    for _ in range(NEWTON_STEPS):
        s = torch.sigmoid(_matvec(A, x))
        hessian = (A.mT * (s * (1 - s)).unsqueeze(-2)) @ A / ROWS + RIDGE * torch.eye(P, dtype=DTYPE)
        x = x - torch.linalg.solve(hessian, gradient(x).unsqueeze(-1)).squeeze(-1)
    return Problems(gradient, x, *_initial_states(batch, generator))


def _initial_states(batch, generator):
    return (torch.randn(batch, P, generator=generator, dtype=DTYPE) for _ in range(2))


def unroll(network: str, params: torch.Tensor, problems: Problems):
    """Run ``network`` with per-layer scalars ``params`` (shape ``(k, L)``); returns ``(x_L, v_L)``, with
    ``v_L = None`` for the ResNet."""
    grad = problems.gradient
    if network in ("ResNet", "momentum"):
        blocks = [lambda x, a=a: -a * grad(x) for a in params[0]]
        if network == "ResNet":
            return MomentumNet(blocks, gamma=0.0, backprop="autograd")(problems.x0), None
        net = MomentumNet(blocks, gamma=GAMMA, backprop="autograd", v0=problems.v0)
        return net(problems.x0, return_velocity=True)
    if network == "RevNet":
        z = torch.cat([problems.v0, problems.x0], -1)
        for a, b in params.T:
            z = additive_coupling(lambda x, a=a: -a * grad(x), lambda v, b=b: b * v)(z)
        v, x = split(z)
        return x, v
    z = torch.cat([problems.x0, problems.v0], -1)
    for a, h in params.T:
        z = verlet_map(lambda x, a=a: -a * grad(x), h)(z)
    return split(z)


def squared_distances(network: str, params: torch.Tensor, problems: Problems):
    """Mean over the batch of :math:`\\|z_L - z^*\\|^2` (whole state) and of :math:`\\|x_L - x^*\\|^2`."""
    x, v = unroll(network, params, problems)
    to_minimizer = (x - problems.minimizer).pow(2).sum(-1)
    state = to_minimizer if v is None else to_minimizer + v.pow(2).sum(-1)
    return state.mean(), to_minimizer.mean()


def initial_squared_distance(network: str, problems: Problems) -> float:
    """:math:`\\mathbb E\\|z_0 - z^*\\|^2` of the network's input state."""
    distance = (problems.x0 - problems.minimizer).pow(2).sum(-1)
    if network != "ResNet":
        distance = distance + problems.v0.pow(2).sum(-1)
    return float(distance.mean())


def volume_floor(n: int, sigma: float = 1.0) -> float:
    r"""Least :math:`\mathbb E\|\Phi(z) - p\|^2` over volume-preserving :math:`\Phi` and points :math:`p`, for
    :math:`z \sim \mathcal N(m, \sigma^2 I_n)`.

    The law of :math:`\Phi(z)` has density at most :math:`(2\pi\sigma^2)^{-n/2}`; the second moment about
    :math:`p` of such a law is smallest for the uniform law on the ball :math:`B(p, R)` of volume
    :math:`(2\pi\sigma^2)^{n/2}`:

    .. math:: \frac{n}{n+2} R^2 = \frac{2n}{n+2}\,\sigma^2\,\Gamma(n/2 + 1)^{2/n}.
    """
    return 2 * n / (n + 2) * sigma**2 * math.exp(2 / n * math.lgamma(n / 2 + 1))


def _train_and_test(context, network, depth, train, test, steps, lr):
    """Learn the per-layer scalars at one depth; returns the test (state, minimizer) squared distances."""
    theta = torch.tensor(INIT[network], dtype=DTYPE).log().unsqueeze(1).repeat(1, depth)
    theta.requires_grad_(True)
    scale = initial_squared_distance(network, train)
    fit(
        lambda: squared_distances(network, theta.exp(), train)[0] / scale,
        [theta],
        steps=steps,
        lr=lr,
        context=context,
        desc=f"{network}, L = {depth}",
    )
    with torch.no_grad():
        return [float(d) for d in squared_distances(network, theta.exp(), test)]


PROBLEMS = {"least squares": least_squares, "logistic regression": logistic_regression}
QUICK = dict(depths=(1, 2, 4, 8, 16, 32), steps=30, lr=0.1, train=128, test=512)
FULL = dict(depths=(1, 2, 4, 8, 16, 32, 64, 128), steps=200, lr=0.05, train=512, test=2048)


@experiment(
    "learning-to-optimize",
    "Networks whose layers are optimizer iterations with learned step sizes, on random least-squares and "
    "logistic-regression instances: momentum network against RevNet, leapfrog network and ResNet, "
    "distance to the fixed point against depth",
)
def run(context) -> dict:
    size = QUICK if context.quick else FULL
    depths, steps, lr = size["depths"], size["steps"], size["lr"]
    n_train, n_test = size["train"], size["test"]
    generator = torch.Generator().manual_seed(context.seed)
    floor = volume_floor(2 * P)

    results, metrics = {}, {}
    for problem, make in PROBLEMS.items():
        train, test = make(n_train, generator), make(n_test, generator)
        for network in INIT:
            initial = initial_squared_distance(network, test)
            rows = [_train_and_test(context, network, L, train, test, steps, lr) for L in depths]
            state, minimizer = (np.sqrt(np.array(col) / initial) for col in zip(*rows, strict=True))
            results[problem, network] = (state, minimizer, initial)
            key = f"{problem.replace(' ', '_')}_{network}"
            metrics[f"{key}_relative_state_distance_at_depth_{depths[-1]}"] = float(state[-1])
            metrics[f"{key}_relative_minimizer_distance_at_depth_{depths[-1]}"] = float(minimizer[-1])
            metrics[f"{key}_relative_state_distance"] = state.tolist()
            metrics[f"{key}_relative_minimizer_distance"] = minimizer.tolist()
            if network in VOLUME_PRESERVING:
                metrics[f"{key}_min_squared_distance_over_volume_floor"] = float(
                    min(state**2) * initial / floor
                )
    _figure(context, depths, results, floor)

    momentum = max(results[problem, "momentum"][0][-1] for problem in PROBLEMS)
    preserving = min(
        metrics[f"{problem.replace(' ', '_')}_{network}_min_squared_distance_over_volume_floor"]
        for problem in PROBLEMS
        for network in VOLUME_PRESERVING
    )
    criteria = {
        f"momentum network: max relative distance to the fixed point at depth {depths[-1]}": criterion(
            momentum, "<=", 1e-2
        ),
        # a theorem, true for every value of the parameters: a sanity row on the code, not a result
        "RevNet and leapfrog: min E|z_L - z*|^2 / volume floor over depths (theorem)": criterion(
            preserving, ">=", 1.0
        ),
    }
    settings = {
        "p": P,
        "rows": ROWS,
        "ridge": RIDGE,
        "gamma": GAMMA,
        "depths": list(depths),
        "adam_steps": steps,
        "lr": lr,
        "train_instances": n_train,
        "test_instances": n_test,
        "initial_state": "x0, v0 ~ N(0, I_p) (x0 only for the ResNet)",
        "parameters": "per-layer positive scalars (log-parametrized), learned at each depth",
        "init": {network: list(values) for network, values in INIT.items()},
        "volume_floor": floor,
    }
    return {"settings": settings, "metrics": metrics, "criteria": criteria}


def _figure(context, depths, results, floor):
    fig, axes = plt.subplots(1, len(PROBLEMS), figsize=(11, 4.2), sharey=True)
    for ax, problem in zip(axes, PROBLEMS, strict=True):
        for network in INIT:
            state, minimizer, initial = results[problem, network]
            (line,) = ax.semilogy(depths, state, "o-", label=f"{network}: |z_L - z*|")
            if network != "ResNet":
                ax.semilogy(depths, minimizer, ":", color=line.get_color(), label=f"{network}: |x_L - x*|")
        preserving_initial = results[problem, VOLUME_PRESERVING[0]][2]
        ax.axhline(
            math.sqrt(floor / preserving_initial),
            color="k",
            ls="--",
            lw=1,
            label="volume floor of |z_L - z*|",
        )
        ax.set(xscale="log", xlabel="depth L", title=problem)
        ax.set_xticks(depths, [str(L) for L in depths])
        ax.tick_params(which="minor", labelbottom=False)
    axes[0].set_ylabel("RMS distance / RMS initial distance")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4)
    context.save(fig, "distance_to_fixed_point")
