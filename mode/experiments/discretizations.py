r"""Every scheme of :data:`mode.SCHEMES` on one fixed field: accuracy, cost and reversal.

For :math:`\varepsilon \ddot x + \dot x = f(x, t)` with a fixed seeded field :math:`f` (a
:class:`~mode.theory.fields.TanhField`, time dependent and not a gradient):

* global error at :math:`T` against the number of steps :math:`L`, fitted as
  :math:`\text{error} \approx C h^p` with :math:`h = T / L`, against SciPy's DOP853 at ``rtol = 1e-12``;
* cost: evaluations of :math:`f` counted per step and error against evaluations;
* reversal at a fixed step :math:`h`: :math:`L` steps forward, then :math:`L` closed-form inverse steps in
  float32 and float64, whose error grows like :math:`u\, c^{-L}` (:math:`c` the volume factor of a step);
  against it the exact reversal of :class:`~mode.MomentumNet` (``backprop="reversible"``), bit for bit, and
  the size of the bit stack it keeps, close to the information minimum :math:`L \log_2(1/\gamma)`.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.integrate import solve_ivp

from mode.experiments.registry import criterion, experiment
from mode.integrate import integrate
from mode.nn import MomentumNet
from mode.schemes import SCHEMES
from mode.theory.discretization import fitted_order
from mode.theory.fields import TanhField, frozen
from mode.theory.finite_precision import float_reversal_error
from mode.theory.invertibility import conformal_factor

D, BATCH = 4, 8
EPS, T = 0.5, 1.0
# Reversal runs at a fixed step, as a network of depth L does: gamma = 1 - h / eps = 0.9.
REVERSAL_STEP, REVERSAL_EPS = 0.1, 1.0
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Steps of the order fits, depths of the float reversal and depths of the bit stack. The stack's spill
#: schedule depends on gamma and L only, so one input point shows its growth to depths where the float
#: inverse has long lost every digit.
QUICK = dict(
    steps=(20, 40, 80, 160), depths=(8, 16, 32, 64, 128), stack_depths=tuple(2**i for i in range(3, 11))
)
FULL = dict(
    steps=(10, 20, 40, 80, 160, 320),
    depths=(8, 16, 32, 64, 128, 192, 256),
    stack_depths=tuple(2**i for i in range(3, 13)),
)
#: Largest accepted distance between a fitted and a declared order.
ORDER_TOLERANCE = 0.15


def reference_solution(field, x0: torch.Tensor, eps: float, T: float) -> np.ndarray:
    r""":math:`x(T)` of :math:`\varepsilon \ddot x + \dot x = f(x, t)`, :math:`\dot x(0) = 0`, by DOP853.

    The batch is integrated as one system of size :math:`2 \times` ``x0.numel()`` with ``rtol = 1e-12``,
    ``atol = 1e-14``, a code path independent of the schemes it checks.
    """
    shape, size = x0.shape, x0.numel()

    def rhs(t, y):
        x = torch.from_numpy(y[:size]).reshape(shape)
        with torch.no_grad():
            force = field(x, torch.tensor(t, dtype=torch.float64)).numpy().ravel()
        return np.concatenate([y[size:], (force - y[size:]) / eps])

    y0 = np.concatenate([x0.numpy().ravel(), np.zeros(size)])
    solution = solve_ivp(rhs, (0.0, T), y0, method="DOP853", rtol=1e-12, atol=1e-14)
    return solution.y[:size, -1].reshape(shape)


def scheme_reversal_error(name: str, field, x0: torch.Tensor, depth: int, h: float, eps: float) -> float:
    r"""RMS error of :math:`L` steps of scheme ``name`` undone by :math:`L` closed-form inverse steps.

    .. math:: (\hat x_0, \hat v_0) = \Phi_{h}^{-1} \circ \cdots \circ \Phi_{h}^{-1}
              \circ \Phi_h \circ \cdots \circ \Phi_h (x_0, 0),

    in the dtype of ``x0``; returns the root mean square of :math:`(\hat x_0 - x_0, \hat v_0)`.
    """
    scheme = SCHEMES[name]
    times = [torch.as_tensor(n * h, dtype=x0.dtype) for n in range(depth)]
    x, v = x0, torch.zeros_like(x0)
    with torch.no_grad():
        for t in times:
            x, v = scheme.step(field, x, v, t, h, eps)
        for t in reversed(times):
            x, v = scheme.inverse(field, x, v, t, h, eps)
    return float(torch.cat([x - x0, v]).to(torch.float64).pow(2).mean().sqrt())


def exact_reversal(field, x0: torch.Tensor, depth: int, h: float, eps: float) -> tuple[float, int, float]:
    r"""Reverse a reversible :class:`~mode.MomentumNet` with blocks :math:`f(\cdot, ih)`.

    Returns
    -------
    (error, bits, minimum)
        The largest absolute difference between :meth:`~mode.MomentumNet.inverse` and the input (0 when bit
        exact), the bit stack's size per coordinate, and the information destroyed by the :math:`L`
        multiplies by :math:`\gamma = n / 2^k`, :math:`L \log_2(2^k / n)` bits.
    """
    blocks = [frozen(field, i * h) for i in range(depth)]
    net = MomentumNet(blocks, eps=eps, step=h, backprop="reversible")
    with torch.no_grad():
        x, v = net(x0, return_velocity=True)
        x_back, v_back = net.inverse(x, v)
    error = max(float((x_back - x0).abs().max()), float(v_back.abs().max()))
    bits = net.bit_stack.bits_per_coordinate()
    return error, bits, depth * math.log2(2**net.k / net.n)


def growth_rate(depths, errors, saturation: float = 1e-3) -> float:
    r"""Least-squares slope :math:`\kappa` of :math:`\log(\text{error}) = \kappa L + c` over the depths
    whose error is below ``saturation``, where the error is still a small perturbation of the state."""
    depths, errors = np.asarray(depths, float), np.asarray(errors, float)
    kept = (errors > 0) & (errors < saturation)
    return float(np.polyfit(depths[kept], np.log(errors[kept]), 1)[0])


def _counted(field):
    """``field`` with a call counter (``.calls``), so the cost is measured rather than declared."""

    def counted(x, t):
        counted.calls += 1
        return field(x, t)

    counted.calls = 0
    return counted


def _orders(context, field, x0, steps):
    """Errors at T against the DOP853 reference, counted evaluations and fitted orders, per scheme."""
    reference = reference_solution(field, x0, EPS, T)
    errors, evaluations, orders = {}, {}, {}
    for name in context.progress(SCHEMES, desc="orders"):
        errors[name], evaluations[name] = [], []
        for L in steps:
            counted = _counted(field)
            x, _ = integrate(counted, x0, eps=EPS, T=T, steps=L, scheme=name)
            errors[name].append(float(np.abs(x.numpy() - reference).max()))
            evaluations[name].append(counted.calls)
        orders[name] = fitted_order(1 / np.array(steps), errors[name])
    return errors, evaluations, orders


def _float_reversal(context, field, x0, depths):
    """Float reversal errors per (invertible scheme, dtype); the momentum scheme as a MomentumNet."""
    errors = {}
    for name, scheme in SCHEMES.items():
        if not scheme.invertible:
            continue
        for key, dtype in DTYPES.items():
            x = x0.to(dtype)
            errors[name, key] = []
            for L in context.progress(depths, desc=f"float reversal, {name}, {key}"):
                if name == "momentum":
                    blocks = [frozen(field, i * REVERSAL_STEP) for i in range(L)]
                    net = MomentumNet(blocks, eps=REVERSAL_EPS, step=REVERSAL_STEP, backprop="autograd")
                    errors[name, key].append(float_reversal_error(net, x))
                else:
                    errors[name, key].append(
                        scheme_reversal_error(name, field, x, L, REVERSAL_STEP, REVERSAL_EPS)
                    )
    return errors


@experiment(
    "discretizations",
    "Every scheme on one field: global error against steps (fitted orders), cost in f evaluations, float32 "
    "and float64 reversal error against depth, and the exact-reversal stack size against depth",
)
def run(context) -> dict:
    size = QUICK if context.quick else FULL
    steps, depths, stack_depths = size["steps"], size["depths"], size["stack_depths"]
    field = TanhField(D, seed=context.seed, scale=1.5)
    x0 = torch.randn(BATCH, D, generator=torch.Generator().manual_seed(context.seed), dtype=torch.float64)

    errors, evaluations, orders = _orders(context, field, x0, steps)
    float_errors = _float_reversal(context, field, x0, depths)
    exact = [
        exact_reversal(field, x0.to(dtype), L, REVERSAL_STEP, REVERSAL_EPS)
        for dtype in DTYPES.values()
        for L in context.progress(depths, desc="exact reversal")
    ]
    stack = [
        exact_reversal(field, x0[:1], L, REVERSAL_STEP, REVERSAL_EPS)
        for L in context.progress(stack_depths, desc="bit stack")
    ]
    exact_error = max(error for error, _, _ in exact + stack)
    bits = [size for _, size, _ in stack]
    minimum = [lost for _, _, lost in stack]

    growth = {
        f"{name}_{key}": errs[-1] / max(errs[0], np.finfo(np.float64).tiny)
        for (name, key), errs in float_errors.items()
    }
    rates = {
        f"{name}_{key}": growth_rate(depths, errs)
        / -math.log(conformal_factor(name, REVERSAL_STEP, REVERSAL_EPS))
        for (name, key), errs in float_errors.items()
    }
    _figures(context, steps, depths, stack_depths, errors, evaluations, orders, float_errors, bits, minimum)
    metrics = {
        **{f"order_{name}": orders[name] for name in SCHEMES},
        **{f"evals_per_step_{name}": evaluations[name][-1] / steps[-1] for name in SCHEMES},
        **{f"error_{name}_at_{steps[-1]}_steps": errors[name][-1] for name in SCHEMES},
        **{f"float_reversal_growth_{key}": value for key, value in growth.items()},
        **{f"float_reversal_rate_over_log_inverse_c_{key}": value for key, value in rates.items()},
        "exact_reversal_max_error": exact_error,
        f"stack_bits_per_coordinate_at_depth_{stack_depths[-1]}": bits[-1],
        f"stack_bits_over_minimum_at_depth_{stack_depths[-1]}": bits[-1] / minimum[-1],
        "errors": errors,
        "evaluations": evaluations,
        "float_reversal_errors": {f"{name}_{key}": errs for (name, key), errs in float_errors.items()},
        "stack_bits": bits,
        "stack_minimum_bits": minimum,
    }
    order_gap = max(abs(orders[name] - SCHEMES[name].order) for name in SCHEMES)
    cost_gap = max(
        abs(evaluations[name][i] - SCHEMES[name].evals_per_step * L)
        for name in SCHEMES
        for i, L in enumerate(steps)
    )
    criteria = {
        "max |fitted order - declared order|": criterion(order_gap, "<=", ORDER_TOLERANCE),
        "max |counted - declared evaluations|": criterion(cost_gap, "<=", 0),
        "exact reversal max |error| (float32 and float64, every depth)": criterion(exact_error, "<=", 0.0),
        f"min float reversal error growth, depth {depths[0]} to {depths[-1]}": criterion(
            min(growth.values()), ">=", 1e3
        ),
    }
    settings = {
        "d": D,
        "batch": BATCH,
        "eps": EPS,
        "T": T,
        "steps": list(steps),
        "field": f"TanhField(d={D}, seed={context.seed}, scale=1.5)",
        "reference": "scipy solve_ivp DOP853, rtol 1e-12, atol 1e-14",
        "reversal_step": REVERSAL_STEP,
        "reversal_eps": REVERSAL_EPS,
        "reversal_gamma": 1 - REVERSAL_STEP / REVERSAL_EPS,
        "reversal_depths": list(depths),
        "stack_depths": list(stack_depths),
    }
    return {"settings": settings, "metrics": metrics, "criteria": criteria}


def _figures(
    context, steps, depths, stack_depths, errors, evaluations, orders, float_errors, bits, minimum
) -> None:
    fig, (ax_steps, ax_cost) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in SCHEMES:
        label = f"{name} (fitted {orders[name]:.2f}, declared {SCHEMES[name].order})"
        ax_steps.loglog(steps, errors[name], "o-", label=label)
        ax_cost.loglog(evaluations[name], errors[name], "o-", label=name)
    ax_steps.set(xlabel="steps L (h = T / L)", ylabel="max |x_L - x(T)|", title="global error")
    ax_cost.set(xlabel="evaluations of f", ylabel="max |x_L - x(T)|", title="error against cost")
    for ax in (ax_steps, ax_cost):
        # minor-tick labels of log axes spanning under a decade overlap the major ones
        ax.tick_params(which="minor", labelbottom=False, labelleft=False)
    ax_steps.legend(fontsize=7)
    ax_cost.legend(fontsize=7)
    context.save(fig, "orders")

    fig, (ax_rev, ax_bits) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (name, key), errs in float_errors.items():
        style = "-" if key == "float64" else "--"
        ax_rev.semilogy(depths, np.maximum(errs, 1e-20), "o" + style, label=f"{name}, {key}")
    ax_rev.set(
        xlabel="depth L",
        ylabel="RMS reversal error",
        title=f"float inverse, h = {REVERSAL_STEP}, eps = {REVERSAL_EPS} (exact reversal: 0)",
    )
    ax_rev.legend(fontsize=7)
    ax_bits.loglog(stack_depths, bits, "o-", label="MomentumNet bit stack")
    ax_bits.loglog(stack_depths, minimum, "k--", label="information destroyed, L log2(1/gamma)")
    ax_bits.loglog(stack_depths, [64 * L for L in stack_depths], ":", label="float64 velocities, 64 L")
    ax_bits.set(xlabel="depth L", ylabel="bits per coordinate", title="exact-reversal storage")
    ax_bits.legend(fontsize=7)
    context.save(fig, "reversal")
