r"""Learning to optimize: volume-preserving networks cannot converge, momentum networks can
(``theory/learning_to_optimize.md``).

An optimizer unrolled as a network should send every initial state to the minimizer. A map with Jacobian
determinant 1 (RevNet couplings, undamped Stormer-Verlet) keeps the volume of every set of states, so it
cannot (L2O-1). A momentum network with :math:`f = -\nabla \mathcal L` is the heavy-ball method: it
contracts phase-space volume by :math:`\gamma^d` per layer (L2O-2) and converges to the minimizer at the
spectral radius of the heavy-ball companion matrices (:func:`heavy_ball_rate`, L2O-3). The obstruction
concerns the whole state: read out :math:`x` alone, from inputs at rest, a tuned Verlet network can
focus (L2O-4).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mode.nn import MomentumNet
from mode.theory.fields import TanhField, frozen
from mode.theory.phase_maps import additive_coupling, split, verlet_map
from mode.theory.registry import Verdict, claim

__all__ = ["heavy_ball_rate", "polygon_area", "verlet_focusing_step"]

DOC = "theory/learning_to_optimize.md"


def polygon_area(points: np.ndarray) -> float:
    r"""Signed area of the closed polygon through ``points`` (shape ``(N, 2)``), by the shoelace formula.

    .. math:: A = \tfrac12 \sum_i (x_i y_{i+1} - x_{i+1} y_i), \qquad (x_N, y_N) = (x_0, y_0),

    positive for counter-clockwise vertices.
    """
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def heavy_ball_rate(curvatures, gamma: float, h: float = 1.0) -> float:
    r"""Asymptotic rate of the momentum network on a quadratic with Hessian eigenvalues ``curvatures``.

    With :math:`f = -\nabla\mathcal L`, the network is the heavy-ball method
    :math:`x_{k+1} = x_k - \alpha\nabla\mathcal L(x_k) + \beta(x_k - x_{k-1})`,
    :math:`\alpha = h(1 - \gamma)`, :math:`\beta = \gamma`; on each eigendirection of curvature
    :math:`\lambda` the error follows the companion matrix

    .. math:: C_\lambda = \begin{bmatrix} 1 + \beta - \alpha\lambda & -\beta \\ 1 & 0 \end{bmatrix},

    and the rate is :math:`\rho = \max_\lambda \rho(C_\lambda)`, computed here from the eigenvalues.
    """
    alpha, beta = h * (1 - gamma), gamma
    return max(
        float(np.abs(np.linalg.eigvals([[1 + beta - alpha * lam, -beta], [1.0, 0.0]])).max())
        for lam in curvatures
    )


def verlet_focusing_step(omega: float, steps: int) -> float:
    r"""The step :math:`h` for which ``steps`` Verlet steps on :math:`\ddot x = -\omega^2 x` turn by a
    quarter period: :math:`\cos\theta = 1 - h^2\omega^2/2` with :math:`\theta = \pi/(2L)`."""
    return math.sqrt(2 * (1 - math.cos(math.pi / (2 * steps)))) / omega


def _square_boundary(per_side: int = 4000) -> np.ndarray:
    """Counter-clockwise boundary of [-1, 1]^2 (area 4)."""
    s = np.linspace(-1.0, 1.0, per_side, endpoint=False)
    one = np.ones_like(s)
    return np.concatenate([np.stack(side, 1) for side in ((s, -one), (one, s), (-s, one), (-one, -s))])


def _image(phi, points: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return phi(torch.from_numpy(points)).numpy()


def _reach(points: np.ndarray, centre: np.ndarray) -> float:
    return float(np.linalg.norm(points - centre, axis=1).max())


def _loss_gradient(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathcal L'(x)` for :math:`\mathcal L(x) = \log\cosh(x - 1) + (x - 1)^2/10`, minimizer 1."""
    return torch.tanh(x - 1) + 0.2 * (x - 1)


@claim(
    "L2O-1",
    "A map of phase space with Jacobian determinant 1 (RevNet couplings, undamped Verlet steps, any depth) "
    "preserves volume, so it maps no set S of positive volume to a point: sup_S |Phi - p| >= "
    "(vol S / vol B_1)^(1/n) for every p.",
    DOC,
)
def check_volume_obstruction() -> Verdict:
    """Shoelace area of the image of [-1, 1]^2 under 6 couplings and under 12 Verlet steps."""
    couplings = [
        additive_coupling(
            frozen(TanhField(1, seed=2 * i, scale=1.5)), frozen(TanhField(1, seed=2 * i + 1, scale=1.5))
        )
        for i in range(6)
    ]
    g = frozen(TanhField(1, seed=40, scale=2.0))
    verlet = verlet_map(lambda x: g(x) - x, 0.25)

    def revnet(z):
        for step in couplings:
            z = step(z)
        return z

    def verlet_net(z):
        for _ in range(12):
            z = verlet(z)
        return z

    boundary = _square_boundary()
    radius = math.sqrt(polygon_area(boundary) / math.pi)
    worst, spread = 0.0, True
    for phi in (revnet, verlet_net):
        image = _image(phi, boundary)
        worst = max(worst, abs(polygon_area(image) / 4 - 1))
        for centre in (np.array([1.0, 0.0]), image.mean(0)):
            spread &= _reach(image, centre) >= radius
    return Verdict(
        worst,
        "|area(Phi(S)) / area(S) - 1| <= 1e-5; sup |Phi - p| >= sqrt(area / pi) at the target and the mean",
        worst <= 1e-5 and spread,
    )


@claim(
    "L2O-2",
    "A momentum network with f = -grad L multiplies phase-space volume by gamma^(dL) after L layers, and "
    "sends every state of a compact subset of the basin of (x*, 0) to (x*, 0) as L grows (the basin "
    "contains a neighbourhood when the Hessian at x* is positive definite and the rate of L2O-3 is < 1).",
    DOC,
)
def check_momentum_collapse() -> Verdict:
    """Shoelace area of the image of [-1, 1]^2 of states (x0, v0) under MomentumNet, d = 1."""
    gamma, worst, reach = 0.7, 0.0, math.inf
    boundary = _square_boundary()
    x0, v0 = (torch.from_numpy(boundary[:, i : i + 1].copy()) for i in (0, 1))
    for depth in (10, 20, 100):
        net = MomentumNet([lambda x: -_loss_gradient(x)] * depth, gamma=gamma, backprop="autograd", v0=v0)
        with torch.no_grad():
            image = torch.cat(net(x0, return_velocity=True), 1).numpy()
        worst = max(worst, abs(polygon_area(image) / (4 * net.gamma_effective**depth) - 1))
        reach = _reach(image, np.array([1.0, 0.0]))
    return Verdict(
        worst,
        "|area(Phi(S)) / (gamma^L area(S)) - 1| <= 1e-5, and sup |Phi - (x*, 0)| <= 1e-6 at L = 100",
        worst <= 1e-5 and reach <= 1e-6,
    )


@claim(
    "L2O-3",
    "On a quadratic with Hessian eigenvalues in [mu, L], a momentum network with f = -grad L is heavy ball "
    "(alpha = h(1 - gamma), beta = gamma) and converges at the rate max_lambda rho(C_lambda); when every "
    "mode is underdamped the rate is sqrt(gamma).",
    DOC,
)
def check_heavy_ball_rate() -> Verdict:
    """Fitted contraction rate of the phase-space error along MomentumNet's layers against heavy_ball_rate."""
    d = 6
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    curvatures = np.linspace(0.05, 1.0, d)
    A = torch.from_numpy(Q @ np.diag(curvatures) @ Q.T)
    minimizer = torch.from_numpy(rng.standard_normal(d))
    worst, underdamped, underdamped_cases = 0.0, 0.0, 0
    for gamma in (0.3, 0.6, 0.8, 0.9):
        layers: list[torch.Tensor] = []

        def f(x, layers=layers):
            layers.append(x - minimizer)
            return -(x - minimizer) @ A.T

        net = MomentumNet([f] * 600, gamma=gamma, backprop="autograd")
        with torch.no_grad():
            net(torch.from_numpy(rng.standard_normal((1, d))))
        errors = np.array([float(e.norm()) for e in layers])
        # The pair (x_k - x*, x_{k-1} - x*) is the heavy-ball state; its norm decays without the zeros
        # that the oscillating x_k - x* alone has.
        state = np.hypot(errors[1:], errors[:-1])
        last = int(np.nonzero(state > 1e-12 * state[0])[0][-1])
        window = np.arange(last // 3, last + 1)
        rate = math.exp(np.polyfit(window, np.log(state[window]), 1)[0])
        gamma = net.gamma_effective
        predicted = heavy_ball_rate(curvatures, gamma)
        worst = max(worst, abs(rate / predicted - 1))
        if np.all(np.abs(1 + gamma - (1 - gamma) * curvatures) < 2 * math.sqrt(gamma)):
            underdamped = max(underdamped, abs(predicted - math.sqrt(gamma)))
            underdamped_cases += 1
    return Verdict(
        worst,
        "max |fitted rate / heavy_ball_rate - 1| <= 1e-3, and heavy_ball_rate = sqrt(gamma) when underdamped",
        worst <= 1e-3 and underdamped <= 1e-12 and underdamped_cases > 0,
    )


@claim(
    "L2O-4",
    "The obstruction of L2O-1 is about the whole state: L Verlet steps with h = verlet_focusing_step(omega, "
    "L) send every (x0, 0) to a state with x_L = 0, the minimizer of omega^2 x^2 / 2.",
    DOC,
)
def check_readout_focusing() -> Verdict:
    r"""Verlet network on :math:`x'' = -\omega^2 x` from inputs at rest: :math:`|x_L|` relative to
    :math:`|x_0|`."""
    worst = 0.0
    x0 = torch.from_numpy(np.random.default_rng(1).standard_normal((32, 1)))
    for omega, steps in ((1.0, 8), (3.0, 25)):
        step = verlet_map(lambda x, omega=omega: -(omega**2) * x, verlet_focusing_step(omega, steps))
        z = torch.cat([x0, torch.zeros_like(x0)], 1)
        for _ in range(steps):
            z = step(z)
        worst = max(worst, float(split(z)[0].abs().max() / x0.abs().max()))
    return Verdict(worst, "max |x_L| / max |x0| <= 1e-12", worst <= 1e-12)
