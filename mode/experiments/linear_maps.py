r"""``linear-maps``: first-order flows miss non-exponential matrices; momentum reaches them up to scale.

Every model has a linear residual function :math:`f(x) = Ax` and maps :math:`x \mapsto Mx`:

.. math::  \text{NODE } x' = Ax: \; M = e^{A}, \qquad
           \text{ResNet (depth } L \text{ even)}: \; M = (I + A/L)^L, \qquad
           \text{momentum } \varepsilon x'' + x' = Ax,\ x'(0) = 0: \; M = \Psi_\varepsilon(A),

all on :math:`[0, 1]`. Each learns :math:`sD` by Adam on the loss
:math:`\mathbb E_{x \sim N(0, I)} \|Mx - sDx\|^2 = \|M - sD\|_F^2` (sampled batches), reported relative to
:math:`\|sD\|_F^2`.

Predictions (``theory/linear_maps.md``):

* :math:`sD` is a momentum map iff :math:`s \le s_{\max}(D, \varepsilon)` (LM-6,
  :func:`~mode.theory.linear_maps.max_reachable_scale`); then the loss can reach 0. The scale is fixed
  once per target, :math:`s = 0.9\, s_{\max}(D, 1)`, so the smaller masses of the grid are predicted to
  fail. For odd :math:`n` and symmetric :math:`D` an unreachable target keeps a loss of at least
  :math:`(m_\varepsilon - \lambda_{\max}(sD))^2`: :math:`\Psi_\varepsilon(A)` has a real eigenvalue
  :math:`\psi_\varepsilon(\lambda) \ge m_\varepsilon` (the real eigenvalue :math:`\lambda` of :math:`A`),
  which the Bauer-Fike theorem keeps that far from the spectrum of :math:`sD`. For :math:`-I_3` it is
  attained (pair two directions, put :math:`\lambda^*` on the third).
* First-order maps have :math:`\det M \ge 0` (:math:`\det e^A = e^{\operatorname{tr} A}`, and an even
  power is a square), so for :math:`\det D < 0` the loss is at least :math:`\sigma_{\min}(sD)^2`, the
  squared distance to the singular matrices (Eckart-Young); it is the exact floor for :math:`-I_3`
  (approached by :math:`e^A \to \operatorname{diag}(-1, -1, 0)`). In :math:`2 \times 2`, :math:`e^A` and a
  square :math:`B^2` have a complex pair, a double or two non-negative eigenvalues, so they lie in
  :math:`\{\operatorname{disc} \le 0\} \cup \{\operatorname{tr} \ge 0\}`; writing
  :math:`M = \alpha I + p\sigma_z + q\sigma_x + rJ` (orthogonal, each of squared norm 2),
  :math:`\operatorname{disc} = 4(p^2 + q^2 - r^2)`, and the squared distance to that union is
  :math:`\min((\sqrt{p^2 + q^2} - |r|)_+^2,\ 2\min(\alpha, 0)^2)`: :math:`s^2/4` for
  :math:`\operatorname{diag}(-1, -2)`, again exact. These are lower bounds; an upper bound on the true
  first-order floor is the best :math:`\|e^L - sD\|_F^2` found by a multi-start search over :math:`L`.

The trained maps are re-evaluated with the library (:func:`mode.odeint` for the NODE,
:func:`~mode.theory.linear_maps.momentum_flow_matrix` for momentum, :class:`mode.MomentumNet` for the
ResNet) and the losses are computed from those.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

import mode
from mode.experiments.registry import criterion, experiment
from mode.experiments.training import fit
from mode.theory.linear_maps import (
    m_eps,
    max_reachable_scale,
    momentum_flow_matrix,
    random_negative_determinant,
)

DTYPE = torch.float64
#: Depth of the linear ResNet; even, so that its map is a square and keeps det >= 0.
RESNET_DEPTH = 16
#: Mass at which the target scale is chosen: s = 0.9 s_max(D, REFERENCE_EPS).
REFERENCE_EPS = 1.0
#: A reachable momentum target counts as learned below this relative loss.
LEARNED = 1e-4
#: Relative slack when comparing a loss with a floor it can approach: the library maps carry solver and
#: rounding errors far below it.
SLACK = 1e-8


def momentum_matrix(A: torch.Tensor, eps: float, T: float = 1.0) -> torch.Tensor:
    r"""Differentiable time-:math:`T` map of :math:`\varepsilon x'' + x' = Ax`, :math:`x'(0) = 0`.

    .. math:: \Psi_\varepsilon(A) = \begin{bmatrix} I & 0\end{bmatrix}
              \exp\!\Big(T\begin{bmatrix} 0 & I\\ A/\varepsilon & -I/\varepsilon\end{bmatrix}\Big)
              \begin{bmatrix} I \\ 0\end{bmatrix},

    the formula of :func:`~mode.theory.linear_maps.momentum_flow_matrix`, in torch so that it can be
    trained through.
    """
    n = A.shape[0]
    eye, zero = torch.eye(n, dtype=A.dtype), torch.zeros(n, n, dtype=A.dtype)
    phase = torch.cat([torch.cat([zero, eye], 1), torch.cat([A / eps, -eye / eps], 1)], 0)
    return torch.linalg.matrix_exp(T * phase)[:n, :n]


def first_order_floor(D: np.ndarray) -> float:
    r"""Lower bound on :math:`\|M - D\|_F^2` over real exponentials and real squares :math:`M`.

    :math:`\sigma_{\min}(D)^2` when :math:`\det D < 0`; for :math:`2 \times 2` also
    :math:`\min((\sqrt{p^2 + q^2} - |r|)_+^2, 2\min(\alpha, 0)^2)` (module docstring); 0 otherwise.
    """
    bound = 0.0
    if np.linalg.det(D) < 0:
        bound = float(np.linalg.svd(D, compute_uv=False)[-1] ** 2)
    if D.shape == (2, 2):
        alpha, p = (D[0, 0] + D[1, 1]) / 2, (D[0, 0] - D[1, 1]) / 2
        q, r = (D[0, 1] + D[1, 0]) / 2, (D[0, 1] - D[1, 0]) / 2
        outside_cone = max(float(np.hypot(p, q)) - abs(r), 0.0) ** 2
        bound = max(bound, min(outside_cone, 2 * min(alpha, 0.0) ** 2))
    return bound


def momentum_floor(D: np.ndarray, eps: float) -> float | None:
    r"""Lower bound on :math:`\|\Psi_\varepsilon(A) - D\|_F^2` over :math:`A` (``None``: none known).

    0 if :math:`D` is reachable (LM-6), the odd-symmetric bound of the module docstring, else ``None``.
    """
    if 1.0 <= max_reachable_scale(D, eps):
        return 0.0
    if D.shape[0] % 2 == 1 and np.allclose(D, D.T):
        return max(m_eps(eps) - float(np.linalg.eigvalsh(D)[-1]), 0.0) ** 2
    return None


def best_exponential(D: np.ndarray, *, starts: int, steps: int, generator: torch.Generator, context) -> float:
    r""":math:`\min \|e^L - D\|_F^2` over ``starts`` Adam runs from :math:`L \sim N(0, 4)`: an upper bound."""
    n = D.shape[0]
    L = (2.0 * torch.randn(starts, n, n, generator=generator, dtype=DTYPE)).requires_grad_()
    target = torch.as_tensor(D, dtype=DTYPE)
    # the runs are independent, so the sum of their losses trains each one as if alone
    fit(
        lambda: ((torch.linalg.matrix_exp(L) - target) ** 2).sum(),
        [L],
        steps=steps,
        lr=0.2,
        context=context,
        desc="first-order floor search",
    )
    with torch.no_grad():
        return float(((torch.linalg.matrix_exp(L) - target) ** 2).sum((1, 2)).min())


class LinearModel:
    """One model ``kind`` ("node", "resnet" or "momentum") over the residual function ``f(x) = A x``."""

    def __init__(self, kind: str, n: int, eps: float | None, generator: torch.Generator):
        self.kind, self.eps = kind, eps
        self.field = torch.nn.Linear(n, n, bias=False, dtype=DTYPE)
        with torch.no_grad():
            self.field.weight.copy_(0.1 * torch.randn(n, n, generator=generator, dtype=DTYPE))
        if kind == "resnet":
            self.net = mode.MomentumNet(
                [self.field] * RESNET_DEPTH, gamma=0.0, step=1 / RESNET_DEPTH, backprop="autograd"
            )
        self.eye = torch.eye(n, dtype=DTYPE)

    def matrix(self) -> torch.Tensor:
        """:math:`M`, differentiable in :math:`A` (exact maps for the flows)."""
        A = self.field.weight
        if self.kind == "node":
            return torch.linalg.matrix_exp(A)
        if self.kind == "momentum":
            return momentum_matrix(A, self.eps)
        return self.net(self.eye).T

    def library_matrix(self) -> np.ndarray:
        """:math:`M` as the library computes it (solver, theory module, network)."""
        with torch.no_grad():
            if self.kind == "node":
                sol = mode.odeint(self.field, self.eye, eps=0.0, T=1.0, rtol=1e-11, atol=1e-13)
                return sol.x.T.numpy()
            if self.kind == "momentum":
                return momentum_flow_matrix(self.field.weight.numpy(), self.eps)
            return self.net(self.eye).T.numpy()


def _models(eps_grid) -> list[tuple[str, str, float | None]]:
    return [("NODE", "node", None), (f"ResNet L={RESNET_DEPTH}", "resnet", None)] + [
        (f"momentum eps={eps:g}", "momentum", eps) for eps in eps_grid
    ]


def _targets(settings: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    targets = {"-I_3": -np.eye(3), "diag(-1,-2)": np.diag([-1.0, -2.0])}
    for k in range(settings["random_3x3"]):
        targets[f"random 3x3 #{k}"] = random_negative_determinant(3, rng)
    for k in range(settings["random_5x5"]):
        targets[f"random 5x5 #{k}"] = random_negative_determinant(5, rng)
    return targets


#: The quick run: the two named targets, one random 3 x 3 and three masses; the full run adds targets,
#: masses and Adam steps.
QUICK = {
    "eps": [0.25, 1.0, 4.0],
    "random_3x3": 1,
    "random_5x5": 0,
    "steps": 500,
    "lr": 0.5,
    "batch": 256,
    "floor_search": {"starts": 16, "steps": 500},
}
FULL = {
    "eps": [0.1, 0.25, 0.5, 1.0, 2.0, 4.0],
    "random_3x3": 3,
    "random_5x5": 1,
    "steps": 3000,
    "lr": 0.5,
    "batch": 256,
    "floor_search": {"starts": 128, "steps": 4000},
}


@experiment(
    "linear-maps",
    "Linear maps: NODE/ResNet vs momentum on -I_3, diag(-1,-2), negative-determinant D (theory next to loss)",
)
def run(context) -> dict:
    settings = {
        **(QUICK if context.quick else FULL),
        "T": 1.0,
        "resnet_depth": RESNET_DEPTH,
        "reference_eps": REFERENCE_EPS,
        "scale_fraction": 0.9,
        "learned_below": LEARNED,
    }
    generator = torch.Generator().manual_seed(context.seed)
    targets = _targets(settings, np.random.default_rng(context.seed))
    metrics, criteria, curves = {}, {}, {}
    worst_mismatch = 0.0
    for name, D in targets.items():
        s = settings["scale_fraction"] * max_reachable_scale(D, REFERENCE_EPS)
        sD = s * D
        norm2 = float(np.sum(sD**2))
        floor = first_order_floor(sD) / norm2
        metrics[f"{name}: scale s"] = s
        metrics[f"{name}: first-order floor (lower bound)"] = floor
        metrics[f"{name}: first-order best e^L found (upper bound)"] = (
            best_exponential(sD, generator=generator, context=context, **settings["floor_search"]) / norm2
        )
        target = torch.as_tensor(sD, dtype=DTYPE)
        curves[name] = {}
        for label, kind, eps in _models(settings["eps"]):
            model = LinearModel(kind, D.shape[0], eps, generator)

            def loss_fn(model=model, target=target, n=D.shape[0]):
                x = torch.randn(settings["batch"], n, generator=generator, dtype=DTYPE)
                return ((x @ (model.matrix() - target).T) ** 2).sum(1).mean()

            history = fit(
                loss_fn,
                model.field.parameters(),
                steps=settings["steps"],
                lr=settings["lr"],
                context=context,
                desc=f"{name} {label}",
            )
            M = model.library_matrix()
            with torch.no_grad():
                worst_mismatch = max(worst_mismatch, float(np.abs(model.matrix().numpy() - M).max()))
            loss = float(np.sum((M - sD) ** 2)) / norm2
            curves[name][label] = np.array(history) / norm2
            metrics[f"{name}: {label} loss"] = loss
            if kind != "momentum":
                # a theorem: a failure means a wrong map or a wrong floor, not bad luck
                criteria[f"{name}: {label} loss >= first-order floor"] = criterion(
                    loss, ">=", floor * (1 - SLACK)
                )
                continue
            bound = momentum_floor(sD, eps)
            metrics[f"{name}: {label} reachable (theory)"] = bound == 0.0
            if bound is None:
                continue
            metrics[f"{name}: {label} floor (theory)"] = bound / norm2
            if bound == 0.0:
                criteria[f"{name} learned up to scale ({label})"] = criterion(loss, "<", LEARNED)
            elif bound > 0.0:
                criteria[f"{name}: {label} unreachable, loss >= its floor"] = criterion(
                    loss, ">=", bound / norm2 * (1 - SLACK)
                )
    metrics["max |training map - library map|"] = worst_mismatch
    criteria["max |training map - library map|"] = criterion(worst_mismatch, "<", 1e-8)
    context.save(_figure(curves, metrics), "linear_maps")
    return {"settings": settings, "metrics": metrics, "criteria": criteria}


def _figure(curves: dict, metrics: dict):
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6), squeeze=False)
    for ax, (name, models) in zip(axes[0], curves.items(), strict=True):
        for label, history in models.items():
            ax.semilogy(np.maximum(history, 1e-18), label=label, lw=1.2)
        ax.axhline(metrics[f"{name}: first-order floor (lower bound)"], color="k", ls="--", lw=1)
        ax.set_title(f"{name} (s = {metrics[f'{name}: scale s']:.3g})")
        ax.set_xlabel("Adam step")
    axes[0, 0].set_ylabel(r"$\|M - sD\|_F^2 / \|sD\|_F^2$ (batch)")
    axes[0, -1].legend(fontsize=7, loc="lower left")
    fig.suptitle("linear maps: dashed = first-order floor (det / 2x2 bound)")
    fig.tight_layout()
    return fig
