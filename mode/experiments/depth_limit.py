r"""Depth as time: a deep MomentumNet tends to the second-order ODE, and to the first-order NODE as
:math:`\varepsilon \to 0`.

For one fixed seeded residual function :math:`f` (a small tanh MLP) shared by all :math:`L` layers, step
:math:`h = T / L` and :math:`\gamma = 1 - h / \varepsilon`, the network

.. math:: v_{i+1} = \gamma v_i + (1 - \gamma) f(x_i), \qquad x_{i+1} = x_i + h v_{i+1}, \qquad v_0 = 0,

is the momentum scheme for :math:`\varepsilon \ddot x + \dot x = f(x)`, :math:`\dot x(0) = 0`, so

* at fixed :math:`\varepsilon`, :math:`|x_L - x_\varepsilon(T)| = O(1/L)`, with :math:`x_\varepsilon(T)`
  solved by torchdiffeq (:func:`mode.odeint`, dopri5 at ``rtol = 1e-11``);
* as :math:`\varepsilon \to 0` with :math:`\gamma` fixed (:math:`h = (1 - \gamma)\varepsilon`, both the
  model error and the discretization error are :math:`O(\varepsilon)`),
  :math:`|x_L - x_0(T)| = O(\varepsilon)` with :math:`x_0` the NODE :math:`\dot x = f(x)`.

Both rates are fitted as log-log slopes.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

from mode.continuous import odeint
from mode.experiments.registry import criterion, experiment
from mode.nn import MomentumNet
from mode.theory.discretization import fitted_order

D, HIDDEN, BATCH, T = 4, 16, 16, 1.0
# gamma of the eps -> 0 sweep: h = (1 - gamma) eps keeps h <= eps and the depth at T (1 - gamma)^-1 / eps.
SMALL_EPS_GAMMA = 0.875
TOLERANCES = dict(rtol=1e-11, atol=1e-12)
#: Depths and masses of the sweep in L, and the masses of the sweep eps -> 0.
QUICK = dict(depths=(16, 32, 64, 128, 256), eps=(0.25, 0.5, 1.0), small_eps=(0.08, 0.04, 0.02, 0.01))
FULL = dict(
    depths=(16, 32, 64, 128, 256, 512, 1024, 2048),
    eps=(0.125, 0.25, 0.5, 1.0, 2.0),
    small_eps=(0.16, 0.08, 0.04, 0.02, 0.01, 0.005),
)


def residual_function(seed: int) -> torch.nn.Module:
    """A frozen float64 MLP :math:`f(x) = W_2 \\tanh(W_1 x + b_1) + b_2` with PyTorch's default init."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        f = torch.nn.Sequential(torch.nn.Linear(D, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, D))
    return f.double().requires_grad_(False)


def network_output(f, x0: torch.Tensor, depth: int, eps: float) -> torch.Tensor:
    """:math:`x_L` of ``MomentumNet([f] * L, eps=eps, step=T / L)``."""
    net = MomentumNet([f] * depth, eps=eps, step=T / depth, backprop="autograd")
    with torch.no_grad():
        return net(x0)


def _error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@experiment(
    "depth-limit",
    "MomentumNet with gamma = 1 - h/eps tends to the torchdiffeq solution of eps x'' + x' = f as the depth "
    "L grows (rate 1 in 1/L), and to the first-order NODE as eps -> 0 (rate 1 in eps)",
)
def run(context) -> dict:
    size = QUICK if context.quick else FULL
    depths, eps_values, small_eps = size["depths"], size["eps"], size["small_eps"]
    f = residual_function(context.seed)
    x0 = torch.randn(BATCH, D, generator=torch.Generator().manual_seed(context.seed), dtype=torch.float64)

    depth_errors, depth_rates = {}, {}
    for eps in context.progress(eps_values, desc="depth sweep"):
        limit = odeint(f, x0, eps=eps, T=T, **TOLERANCES).x
        depth_errors[eps] = [_error(network_output(f, x0, L, eps), limit) for L in depths]
        depth_rates[eps] = -fitted_order(depths, depth_errors[eps])

    node = odeint(f, x0, eps=0.0, T=T, **TOLERANCES).x
    net_gaps, ode_gaps = [], []
    for eps in context.progress(small_eps, desc="eps sweep"):
        depth = math.ceil(T / ((1 - SMALL_EPS_GAMMA) * eps))
        net_gaps.append(_error(network_output(f, x0, depth, eps), node))
        ode_gaps.append(_error(odeint(f, x0, eps=eps, T=T, **TOLERANCES).x, node))
    eps_rate = fitted_order(small_eps, net_gaps)
    ode_eps_rate = fitted_order(small_eps, ode_gaps)

    _figures(
        context, depths, depth_errors, depth_rates, small_eps, net_gaps, ode_gaps, eps_rate, ode_eps_rate
    )
    worst = max(abs(rate - 1) for rate in depth_rates.values())
    metrics = {
        **{f"rate_in_1/L_eps_{eps:g}": rate for eps, rate in depth_rates.items()},
        "rate_in_eps_momentum_net": eps_rate,
        "rate_in_eps_continuous_ode": ode_eps_rate,
        **{f"error_at_depth_{depths[-1]}_eps_{eps:g}": errs[-1] for eps, errs in depth_errors.items()},
        f"gap_to_node_at_eps_{small_eps[-1]:g}": net_gaps[-1],
        "depth_errors": {f"{eps:g}": errs for eps, errs in depth_errors.items()},
        "net_gaps_to_node": net_gaps,
        "ode_gaps_to_node": ode_gaps,
    }
    criteria = {
        "max over eps |rate in 1/L - 1|": criterion(worst, "<=", 0.1),
        "|rate in eps - 1| (MomentumNet to NODE)": criterion(abs(eps_rate - 1), "<=", 0.1),
    }
    settings = {
        "d": D,
        "hidden": HIDDEN,
        "batch": BATCH,
        "T": T,
        "depths": list(depths),
        "eps_values": list(eps_values),
        "small_eps": list(small_eps),
        "small_eps_gamma": SMALL_EPS_GAMMA,
        "reference": f"mode.odeint dopri5, rtol {TOLERANCES['rtol']}, atol {TOLERANCES['atol']}",
        "error": "max |x_L - x(T)| over the batch and coordinates",
    }
    return {"settings": settings, "metrics": metrics, "criteria": criteria}


def _figures(context, depths, depth_errors, depth_rates, small_eps, net_gaps, ode_gaps, eps_rate, ode_rate):
    fig, (ax_depth, ax_eps) = plt.subplots(1, 2, figsize=(11, 4.2))
    for eps, errs in depth_errors.items():
        ax_depth.loglog(depths, errs, "o-", label=f"eps = {eps:g} (rate {depth_rates[eps]:.3f})")
    ax_depth.set(xlabel="depth L", ylabel="max |x_L - x_eps(T)|", title="MomentumNet to the second-order ODE")
    ax_depth.legend(fontsize=8)
    ax_eps.loglog(
        small_eps, net_gaps, "o-", label=f"MomentumNet, gamma = {SMALL_EPS_GAMMA} (rate {eps_rate:.3f})"
    )
    ax_eps.loglog(small_eps, ode_gaps, "s--", label=f"second-order ODE (rate {ode_rate:.3f})")
    ax_eps.set(xlabel="eps", ylabel="max |x - x_NODE(T)|", title="eps -> 0: to the first-order NODE")
    ax_eps.legend(fontsize=8)
    for ax in (ax_depth, ax_eps):
        # minor-tick labels of log axes spanning under a decade overlap the major ones
        ax.tick_params(which="minor", labelbottom=False, labelleft=False)
    context.save(fig, "depth_limit")
