r"""``nested-rings``: four nested rings with alternating labels, separated by a Momentum ResNet.

Ring :math:`k = 1, \ldots, 4` holds points at radius :math:`3(0.5k + 0.2U)`, :math:`U \sim U[0, 1]`, and
a uniform angle; its label is :math:`(k - 1) \bmod 2`. One MLP :math:`f: 2 \to 16 \to 2` (tanh) is shared
by 15 unit steps,

.. math::  v_{n+1} = \gamma v_n + (1 - \gamma) f(x_n), \qquad x_{n+1} = x_n + v_{n+1},

and the final state is used as the two logits (cross-entropy), so the decision boundary is the line
:math:`x_1 = x_2`. The ResNet is :math:`\gamma = 0`.

Why momentum matters: the time-:math:`T` map :math:`\phi` of a first-order flow is a homeomorphism of the
plane, so both classes :math:`U = \phi^{-1}\{x_2 > x_1\}` and :math:`V = \phi^{-1}\{x_2 \le x_1\}` are
path-connected and unbounded. If a whole circle :math:`C` lies in one class, a point of the other class
inside :math:`C` would be joined to infinity by a path of its class, which must cross :math:`C`: so the
whole disc bounded by :math:`C` has the class of :math:`C`. Hence every circle classified wholly
correctly has the class of the largest one, whose disc holds all the others: the circles are all of
rings 2 and 4 or all of rings 1 and 3. Of the circles sampled at ``RADII_PER_RING`` radii across each
ring, at most **half** are classified wholly correctly (:data:`HOMEOMORPHISM_CEILING`), by any
homeomorphism followed by a linear classifier, however it was trained. Pointwise accuracy has no such
ceiling below 1 (a thin cut through each ring costs little). Each circle is sampled at ``ANGLES``
angles, so a cut thinner than their spacing (at most :math:`2\pi \cdot 6.6 / 1024 \approx 0.04`) would go
unseen. A momentum map started at rest, :math:`x_0 \mapsto x_{15}`, is the projection of a flow in phase
space and is not a homeomorphism of the plane, so the ceiling does not bind it.

How the momentum network is trained: with a learned initial velocity :math:`v_0 = g(x_0)` (a second MLP
2-16-2, the variant of Sander et al., 2021), so that :math:`x_{15} \approx x_0 + 13.8\, g(x_0) + \ldots` is
far from the identity from the first step, and on a batch drawn afresh from the ring law at every step,
which charges a thin cut through a ring in proportion to its width instead of letting it pass between
fixed training points. Started at rest and trained on fixed points (an earlier version), the network
reached 0.95-0.99 test accuracy yet classified only a quarter of the circles wholly correctly, below the
ceiling: thin cuts, as a homeomorphism would make. Trained as here, about 70 % of initialisations end
above the ceiling (27 runs, seeds 0-8, three each: 19 at 0.75 or more, the others at 0.39-0.70), so
``restarts`` initialisations are trained and the one that classifies the most *selection* circles wholly
correctly is kept: circles midway between the evaluated radii, at angles offset by half a step, so the
choice never sees the circles it is judged on.

The criterion is that metric against the ceiling, with a margin: the kept momentum network classifies at
least ``HOMEOMORPHISM_CEILING + CIRCLE_MARGIN`` = 0.75 of the circles wholly correctly. Any first-order
flow, and any affine map, stays at or below 0.5 however it is trained
(``tests/experiments/test_nested_rings_criteria.py`` runs both in the network's place), so the criterion
fails exactly when the momentum network behaves like a homeomorphism. The test accuracy is reported next
to it.

The ResNet (:math:`h = 1`, tied, trained on fresh batches from one initialisation, without
:math:`v_0`, which :math:`\gamma = 0` ignores) need not be a homeomorphism either: :math:`x \mapsto x + f(x)`
folds the plane where :math:`I + \nabla f` is singular. Whether it gets past the ceiling depends on the
initialisation, so it has no criterion.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

import mode
from mode.experiments.crossing_1d import DEPTH, DTYPE, mlp
from mode.experiments.registry import criterion, experiment
from mode.experiments.training import fit

RINGS = 4
#: Label -> momentum of the networks compared (0 is the ResNet).
NETWORKS = {"momentum gamma=0.99": 0.99, "ResNet": 0.0}
#: Circles sampled per ring (radii evenly across it, both edges included) and points per circle.
RADII_PER_RING, ANGLES = 16, 1024
#: No homeomorphism followed by a linear classifier classifies more than half the circles wholly correctly.
HOMEOMORPHISM_CEILING = 0.5


def _radius(k: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Radius :math:`3(0.5k + 0.2u)` in ring ``k`` at relative position ``u`` in [0, 1] across it."""
    return 3 * (0.5 * k + 0.2 * u)


def rings(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``n`` points per ring: positions :math:`r(\cos\theta, \sin\theta)`, labels :math:`(k - 1) \bmod 2`."""
    k = torch.arange(1, RINGS + 1).repeat_interleave(n)
    radius = _radius(k, torch.rand(len(k), generator=generator, dtype=DTYPE))
    angle = 2 * math.pi * torch.rand(len(k), generator=generator, dtype=DTYPE)
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1), (k - 1) % 2


def circles_separated(
    classify, per_ring: int = RADII_PER_RING, angles: int = ANGLES, between: bool = False
) -> float:
    r"""Fraction of the circles, ``per_ring`` radii across each ring (both edges included), whose ``angles``
    points all get the ring's label from ``classify`` (points of shape ``(m, 2)`` to labels); at most
    :data:`HOMEOMORPHISM_CEILING` for a homeomorphism followed by a linear classifier (module docstring).

    ``between=True`` takes the held-out circles instead: the ``per_ring - 1`` radii midway between those,
    at angles offset by half a step (for choosing among restarts).
    """
    u = torch.linspace(0, 1, per_ring, dtype=DTYPE)
    if between:
        u = (u[1:] + u[:-1]) / 2
    k = torch.arange(1, RINGS + 1).repeat_interleave(len(u))
    radius = _radius(k, u.repeat(RINGS))
    offset = math.pi / angles if between else 0.0
    angle = torch.linspace(0, 2 * math.pi, angles + 1, dtype=DTYPE)[:-1] + offset
    points = radius[:, None, None] * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    labels = classify(points.reshape(-1, 2)).reshape(len(k), angles)
    return float((labels == ((k - 1) % 2)[:, None]).all(1).double().mean())


#: The kept momentum network must classify this much more than the ceiling wholly correctly.
CIRCLE_MARGIN = 0.25

#: Adam phases ``[lr, steps]`` per model, each step on a fresh batch of ``batch_per_ring`` points per ring:
#: the ResNet diverges at the momentum network's rates (its 15 tied steps compound the slope of f) and
#: trains at 0.01. The momentum network oscillates at a constant 0.05; a last phase at a tenth settles it.
#: ``restarts``: initialisations of the momentum network, the best on the selection circles kept.
QUICK = {
    "batch_per_ring": 256,
    "test_per_ring": 500,
    "restarts": 3,
    "phases": {"momentum": [[0.05, 1200], [0.005, 300]], "ResNet": [[0.01, 1500]]},
    "networks": NETWORKS,
}
FULL = {
    **QUICK,
    "batch_per_ring": 1000,
    "test_per_ring": 2500,
    "restarts": 5,
    "phases": {"momentum": [[0.03, 2500], [0.003, 500]], "ResNet": [[0.01, 3000]]},
}


def _train(net, params, settings: dict, phases: list, data: torch.Generator, context, desc: str) -> None:
    def loss():
        x, y = rings(settings["batch_per_ring"], data)
        return torch.nn.functional.cross_entropy(net(x), y)

    for lr, steps in phases:
        fit(loss, params, steps=steps, lr=lr, context=context, desc=desc)


def _labels(net):
    def classify(points):
        with torch.no_grad():
            return net(points).argmax(1)

    return classify


@experiment("nested-rings", "Four nested rings, 15 tied layers (MLP 2-16-2): whole circles, momentum, ResNet")
def run(context) -> dict:
    settings = {**(QUICK if context.quick else FULL), "depth": DEPTH, "hidden": 16}
    data = torch.Generator().manual_seed(context.seed)
    x_test, y_test = rings(settings["test_per_ring"], data)
    init = torch.Generator().manual_seed(context.seed)
    metrics, kept = {}, {}
    for label, gamma in settings["networks"].items():
        candidates = []
        for restart in range(settings["restarts"] if gamma else 1):
            f = mlp(init, dim=2)
            # gamma = 0 forgets v: the ResNet has no initial velocity to learn.
            g = mlp(init, dim=2) if gamma else None
            net = mode.MomentumNet([f] * DEPTH, gamma=gamma, v0=g, backprop="autograd")
            phases = settings["phases"]["ResNet" if gamma == 0 else "momentum"]
            _train(net, list(net.parameters()), settings, phases, data, context, f"{label} ({restart + 1})")
            candidates.append((circles_separated(_labels(net), between=True), restart, net))
        _, restart, net = max(candidates, key=lambda c: (c[0], -c[1]))
        if gamma:
            metrics[f"{label} selection circles per restart"] = [c[0] for c in candidates]
            metrics[f"{label} restart kept"] = restart
        with torch.no_grad():
            metrics[f"{label} test accuracy"] = float((net(x_test).argmax(1) == y_test).double().mean())
        metrics[f"{label} circles classified wholly correctly"] = circles_separated(_labels(net))
        kept[label] = net
    metrics["homeomorphism ceiling on circles classified wholly correctly (theory)"] = HOMEOMORPHISM_CEILING
    bound = HOMEOMORPHISM_CEILING + CIRCLE_MARGIN
    criteria = {
        f"momentum circles classified wholly correctly >= homeomorphism ceiling + {CIRCLE_MARGIN}": criterion(
            metrics["momentum gamma=0.99 circles classified wholly correctly"], ">=", bound
        ),
    }
    context.save(_figure(kept, settings["networks"], x_test, y_test), "nested_rings")
    return {"settings": settings, "metrics": metrics, "criteria": criteria}


def _figure(nets: dict, networks: dict, x: torch.Tensor, y: torch.Tensor):
    layers = np.linspace(0, DEPTH, 6).round().astype(int)
    size = (2.2 * len(layers), 2.3 * len(nets))
    fig, axes = plt.subplots(len(nets), len(layers), figsize=size, squeeze=False)
    for row, (label, net) in zip(axes, nets.items(), strict=True):
        gamma = networks[label]
        with torch.no_grad():
            v0 = net.initial_velocity(x) if gamma else None  # the first-order ResNet rule has no velocity
            states, _ = mode.integrate(
                net.blocks[0],
                x,
                v0,
                eps=0.0 if gamma == 0 else 1.0 / (1 - gamma),
                T=float(DEPTH),
                steps=DEPTH,
                scheme="momentum",
                return_trajectory=True,
            )
        for ax, layer in zip(row, layers, strict=True):
            ax.scatter(*states[layer].T, c=y.numpy(), cmap="coolwarm", s=1)
            ax.set_title(f"{label}, layer {layer}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        low, high = row[-1].get_xlim()
        row[-1].plot([low, high], [low, high], "k--", lw=0.8)
    fig.tight_layout()
    return fig
