r"""The computations behind the theory-check notebooks of ``notebooks/``.

Each notebook plots and asserts numbers that this module (or the rest of the library) computes, so that
no logic lives only in a notebook. The functions are small compositions of the public API: fixed-step
integration (:func:`mode.integrate`), adaptive solves with evaluation counts (:func:`mode.odeint`),
:class:`mode.MomentumNet` and the machine checks of :mod:`mode.theory`. The training problems of the
last notebook reuse the data and models of :mod:`mode.experiments` at a size that runs in seconds.

Sections follow the notebooks: the second-order model and its limits (01), exact reversal (02), linear
maps (03), discretizations (04), the committed memory benchmark (05), and first- against second-order
models on crossing, rings and spheres (06).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import TqdmWarning

from mode.continuous import ODESolution, odeint
from mode.exact import set_compile
from mode.integrate import integrate
from mode.nn import MomentumNet
from mode.ode import as_vector_field, step_from_depth
from mode.runtime import torch_threads
from mode.schemes import SCHEMES
from mode.theory.discretization import fitted_order
from mode.theory.finite_precision import exponent_stack_bounds, float_reversal_error

with warnings.catch_warnings():
    # The experiment registry imports tqdm.auto, which warns in a notebook kernel without ipywidgets;
    # nothing here shows a progress bar.
    warnings.simplefilter("ignore", TqdmWarning)
    from mode.experiments import crossing_1d, nested_rings, spheres
    from mode.experiments.linear_maps import momentum_matrix
    from mode.experiments.training import fit

__all__ = [
    "CallCounter",
    "amplification_depths",
    "at_time",
    "benchmark_ratio",
    "benchmark_series",
    "convergence",
    "crossing_mse",
    "depth_errors",
    "fit_linear_map",
    "float_reversal_errors",
    "growth_rate",
    "load_benchmark",
    "memory_growth",
    "small_mass_gaps",
    "stack_replay",
    "train_crossing",
    "train_rings",
    "train_spheres",
]


class _Quiet:
    """The minimal experiment context :func:`mode.experiments.training.fit` needs: no progress bars."""

    @staticmethod
    def progress(iterable, **_):
        return iterable


# --------------------------------------------------------------------------------------------------
# 01: the second-order model, its small-mass limit and depth as time
# --------------------------------------------------------------------------------------------------


def at_time(f, t: float):
    """The autonomous block ``x -> f(x, t)`` of a field ``f(x)`` or ``f(x, t)``, as MomentumNet calls it."""
    field = as_vector_field(f)

    def block(x):
        return field(x, torch.tensor(t, dtype=x.dtype, device=x.device))

    return block


def small_mass_gaps(f, x0, masses, *, T=1.0, v0=None, rtol=1e-6, atol=1e-8) -> dict[str, np.ndarray]:
    r"""Distance of the second-order solution to the first-order one at :math:`T`, for each mass.

    :math:`x_\varepsilon` solves :math:`\varepsilon\ddot x + \dot x = f(x, t)`, :math:`x(0) = x_0`,
    :math:`\dot x(0) = v_0` (zero by default) and :math:`x_0` the first-order ODE :math:`\dot x = f(x, t)`;
    both by :func:`mode.odeint` (dopri5) at ``rtol``, ``atol`` (the defaults keep the solver's error far
    below the distances for masses down to about :math:`10^{-3}`, and the stiff solves cheap).
    DISC-2 predicts :math:`O(\varepsilon)` for both returned quantities.

    Returns
    -------
    dict
        ``"position"``: :math:`\max_i |x_\varepsilon(T) - x_0(T)|_i`; ``"velocity"``: the velocity defect
        :math:`\max_i |\dot x_\varepsilon(T) - f(x_\varepsilon(T), T)|_i`, past the initial layer.
    """
    field = as_vector_field(f)
    limit = odeint(field, x0, eps=0.0, T=T, rtol=rtol, atol=atol).x
    horizon = torch.tensor(T, dtype=x0.dtype, device=x0.device)
    position, velocity = [], []
    for eps in masses:
        solution = odeint(field, x0, v0, eps=float(eps), T=T, rtol=rtol, atol=atol)
        position.append(float((solution.x - limit).abs().max()))
        with torch.no_grad():
            velocity.append(float((solution.v - field(solution.x, horizon)).abs().max()))
    return {"position": np.array(position), "velocity": np.array(velocity)}


def depth_errors(f, x0, depths, *, eps, T=1.0, rtol=1e-11, atol=1e-13) -> np.ndarray:
    r"""Error of a depth-:math:`L` :class:`~mode.MomentumNet` against the ODE it discretizes, per depth.

    The network has blocks :math:`f(\cdot, ih)`, :math:`h = T/L` and :math:`\gamma = 1 - h/\varepsilon`
    (``backprop="autograd"``, :math:`v_0 = 0`); the reference :math:`x(T)` of
    :math:`\varepsilon\ddot x + \dot x = f(x, t)`, :math:`\dot x(0) = 0`, comes from :func:`mode.odeint`.
    DISC-3 predicts :math:`O(1/L)`.
    """
    limit = odeint(f, x0, eps=eps, T=T, rtol=rtol, atol=atol).x
    errors = []
    for depth in depths:
        h = step_from_depth(T, int(depth))
        net = MomentumNet([at_time(f, i * h) for i in range(depth)], eps=eps, step=h, backprop="autograd")
        with torch.no_grad():
            errors.append(float((net(x0) - limit).abs().max()))
    return np.array(errors)


# --------------------------------------------------------------------------------------------------
# 02 and 04: reversal in floating point and exactly, orders and cost of the schemes
# --------------------------------------------------------------------------------------------------


def float_reversal_errors(block, x0, depths, **net_kwargs) -> np.ndarray:
    r"""RMS error of undoing a weight-tied ``MomentumNet([block] * L, **net_kwargs)`` in floating point, per
    depth :math:`L` (:func:`mode.theory.finite_precision.float_reversal_error`, in the dtype of ``x0``)."""
    return np.array(
        [
            float_reversal_error(MomentumNet([block] * int(L), backprop="autograd", **net_kwargs), x0)
            for L in depths
        ]
    )


def amplification_depths(rate: float, low: float, high: float, count: int = 6) -> np.ndarray:
    r"""``count`` depths, rounded and deduplicated, spread evenly over those where :math:`e^{\text{rate}\,L}`
    runs from ``low`` to ``high``: the window in which FP-1 fits a reversal error's growth."""
    return np.unique(np.round(np.linspace(np.log(low) / rate, np.log(high) / rate, count)).astype(int))


def growth_rate(depths, errors) -> float:
    r"""Least-squares slope :math:`\kappa` of :math:`\log(\text{error}) = \kappa L + c`, per layer."""
    return float(np.polyfit(np.asarray(depths, float), np.log(np.asarray(errors, float)), 1)[0])


class CallCounter:
    """A vector field ``f(x, t)`` that counts its calls (``.calls``): cost measured, not declared."""

    def __init__(self, f):
        self.f = as_vector_field(f)
        self.calls = 0

    def __call__(self, x, t):
        self.calls += 1
        return self.f(x, t)


def convergence(f, x0, steps, *, eps, T=1.0, reference, schemes=None) -> dict[str, dict]:
    r"""Global error at :math:`T` and counted evaluations of every scheme, against a reference :math:`x(T)`.

    Returns, per scheme name: ``errors`` (max-norm error for each number of steps), ``evaluations``
    (calls of :math:`f`, counted) and ``order``, the fitted slope of :math:`\log(\text{error})` against
    :math:`\log h`, :math:`h = T/L` (DISC-1 predicts ``SCHEMES[name].order``).
    """
    reference = torch.as_tensor(np.asarray(reference), dtype=x0.dtype)
    table = {}
    for name in schemes or SCHEMES:
        errors, evaluations = [], []
        for L in steps:
            counted = CallCounter(f)
            with torch.no_grad():
                x, _ = integrate(counted, x0, eps=eps, T=T, steps=int(L), scheme=name)
            errors.append(float((x - reference).abs().max()))
            evaluations.append(counted.calls)
        order = fitted_order(T / np.asarray(steps, float), errors)
        table[name] = {"errors": errors, "evaluations": evaluations, "order": order}
    return table


# --------------------------------------------------------------------------------------------------
# 03: learned linear maps
# --------------------------------------------------------------------------------------------------


def fit_linear_map(target, kind: str, *, eps=None, T=1.0, steps=500, lr=0.05, seed=0):
    r"""Learn :math:`A` so that a linear flow's time-:math:`T` map approaches ``target``; Adam, full loss.

    ``kind`` ``"momentum"``: :math:`M = \Psi_\varepsilon(A)`, the map of :math:`\varepsilon\ddot x + \dot x
    = Ax`, :math:`\dot x(0) = 0`; ``"node"``: :math:`M = e^{TA}`, the map of :math:`\dot x = Ax`. The loss
    is :math:`\|M - D\|_F^2 / \|D\|_F^2`, which is :math:`\mathbb E\|Mx - Dx\|^2 / \mathbb E\|Dx\|^2` for
    :math:`x \sim N(0, I)`.

    Returns
    -------
    (A, history) : (ndarray, ndarray)
        The learned matrix and the loss after every step.
    """
    if kind not in ("momentum", "node"):
        raise ValueError(f"kind must be 'momentum' or 'node', got {kind!r}")
    if kind == "momentum" and eps is None:
        raise ValueError("a momentum map needs eps")
    D = torch.as_tensor(np.asarray(target, float))
    generator = torch.Generator().manual_seed(seed)
    A = (0.1 * torch.randn(D.shape, generator=generator, dtype=D.dtype)).requires_grad_()

    def loss():
        M = momentum_matrix(A, eps, T) if kind == "momentum" else torch.linalg.matrix_exp(T * A)
        return ((M - D) ** 2).sum() / (D**2).sum()

    history = fit(loss, [A], steps=steps, lr=lr, context=_Quiet())
    with torch.no_grad():
        history.append(float(loss()))
    return A.detach().numpy(), np.array(history[1:])


# --------------------------------------------------------------------------------------------------
# 05: the committed memory benchmark
# --------------------------------------------------------------------------------------------------

#: The entries of a benchmark's ``results.json`` that list cells, each naming its ``workload``, and those
#: keyed by workload.
_CELL_LISTS = ("rows", "skipped", "probes", "timings", "ratios")
_PER_WORKLOAD = ("workloads", "compile", "targets", "memory_check")


def load_benchmark(path, workload: str | None = None) -> dict:
    """The ``results.json`` written by ``mode bench memory`` (``benchmarks/memory_depth/results.json``).

    With ``workload``, only that workload's part, in the same schema: its cells in the lists (``rows``,
    ``skipped``, ...) and its entry alone in the dicts keyed by workload (``targets``, ...).
    """
    results = json.loads(Path(path).read_text())
    if workload is None:
        return results
    if workload not in results["workloads"]:
        raise ValueError(f"no workload {workload!r} in {path}; it holds {list(results['workloads'])}")
    return {
        **results,
        "settings": {**results["settings"], "workloads": [workload]},
        **{key: [cell for cell in results[key] if cell["workload"] == workload] for key in _CELL_LISTS},
        **{key: {workload: results[key][workload]} for key in _PER_WORKLOAD},
    }


def _benchmark_rows(results: dict, method: str, workload: str | None) -> list[dict]:
    """``method``'s rows of ``workload`` (``None``: the file must hold one workload), sorted by depth."""
    rows = [row for row in results["rows"] if workload is None or row["workload"] == workload]
    names = {row["workload"] for row in rows}
    if len(names) > 1:
        raise ValueError(f"the results hold the workloads {sorted(names)}: pick one")
    return sorted((row for row in rows if row["method"] == method), key=lambda row: row["depth"])


def benchmark_series(
    results: dict, method: str, key: str, part: str | None = None, workload: str | None = None
):
    """Depths and the column ``key`` of one method's rows of ``workload``, sorted by depth.

    ``part`` picks an entry of a dict-valued column (``"parameters"`` of ``grad_error``). Rows where the
    column is null (not measured: a skipped depth, an untimed one) are left out; a null part, which the
    benchmark writes where the gradients were not finite, reads as ``inf``. ``workload`` may be left out
    when the results hold one workload (:func:`load_benchmark` with ``workload``).
    """
    depths, values = [], []
    for row in _benchmark_rows(results, method, workload):
        value = row.get(key)
        if value is not None and part is not None:
            value = np.inf if value[part] is None else value[part]
        if value is not None:
            depths.append(row["depth"])
            values.append(value)
    return np.array(depths), np.array(values, dtype=float)


def benchmark_ratio(
    results: dict,
    numerator: str,
    denominator: str,
    key: str,
    part: str | None = None,
    workload: str | None = None,
):
    """Depths where both methods have the column ``key`` (its ``part``), and ``numerator``'s value over
    ``denominator``'s there (of ``workload``, as in :func:`benchmark_series`).

    For ``step_s`` these are the ``ratios`` of ``results.json`` (both medians come from the same
    interleaved rounds).
    """
    top, bottom = (
        dict(zip(*benchmark_series(results, method, key, part, workload), strict=True))
        for method in (numerator, denominator)
    )
    depths = sorted(top.keys() & bottom.keys())
    return np.array(depths), np.array([top[d] / bottom[d] for d in depths], dtype=float)


def memory_growth(results: dict, method: str, workload: str | None = None, bit_stack: bool = True) -> float:
    """Bytes per layer by which ``method``'s activation memory grows from its shallowest to its deepest
    measured depth (of ``workload``, as in :func:`benchmark_series`); without the bit stack where
    ``bit_stack`` is false (:func:`mode.bench.summary.activation_without_stack`)."""
    from mode.bench.summary import activation_without_stack  # the benchmark's extras: momentumnet, memcnn

    rows = _benchmark_rows(results, method, workload)
    if len(rows) < 2:
        raise ValueError(f"{method} was measured at {len(rows)} depth(s): growth needs two")
    size = (lambda row: row["activation_bytes"]) if bit_stack else activation_without_stack
    return (size(rows[-1]) - size(rows[0])) / (rows[-1]["depth"] - rows[0]["depth"])


def stack_replay(results: dict, workload: str, depth: int) -> dict:
    r"""Rerun the reversible forward that ``mode bench memory`` measured on ``workload`` at ``depth``
    (the blocks, input, :math:`\gamma` and threads of ``results``, on the CPU) and hold its bit stack
    against FP-5 (d), which needs the stack's pushes that ``results.json`` does not keep.

    Returns
    -------
    dict
        ``bits`` per coordinate after the forward; FP-5's ``lower`` and ``upper`` bounds on them
        (:func:`~mode.theory.finite_precision.exponent_stack_bounds`); ``multiply_bits``, the
        :math:`L\log_2(2^k/n)` bits the multiplies by :math:`\gamma = n/2^k` destroy, and
        ``exponent_bits``, those the exponent moves shifted out (both counted as FP-5's :math:`I`).
    """
    from mode.bench.workloads import Workload, make_blocks, make_input

    spec = results["workloads"][workload]  # the dataclass's fields, and descriptions
    chosen = Workload(**{field.name: spec[field.name] for field in dataclasses.fields(Workload)})
    cpu = torch.device("cpu")
    # Eager kernels: the compiled ones give the same stack bit for bit (FP-5 (b)), after a compilation
    # that takes longer than the replay.
    previous = set_compile(False)
    try:
        with torch_threads(results["settings"]["threads"]):
            net = MomentumNet(
                make_blocks(depth, chosen, results["seed"], cpu),
                gamma=results["settings"]["gamma"],
                backprop="reversible",
            )
            output = net(make_input(chosen, results["seed"], cpu).requires_grad_())
    finally:
        set_compile(previous)
    stack = net.bit_stack  # held by the forward's record, which lives as long as its output
    del output
    lower, upper = exponent_stack_bounds(stack.pushes(), net.n, net.k)
    multiply_bits = depth * math.log2(2**net.k / net.n)
    return {
        "bits": stack.bits_per_coordinate(),
        "lower": lower,
        "upper": upper,
        "multiply_bits": multiply_bits,
        "exponent_bits": lower - 1 - multiply_bits,  # FP-5's I, less the multiplies' bits
    }


# --------------------------------------------------------------------------------------------------
# 06: first- against second-order models on crossing, rings and spheres
# --------------------------------------------------------------------------------------------------


def crossing_mse(model_map) -> float:
    r""":math:`\mathbb E(\phi(X) + X^3)^2`, :math:`X \sim U[-1, 1]`, by 256-node Gauss-Legendre quadrature,
    which integrates :math:`X^3, X^6` exactly, so that the floor 1/7 of 1D-1 holds for it exactly."""
    nodes, weights = crossing_1d.quadrature(256)
    with torch.no_grad():
        return float((weights * (model_map(nodes) - crossing_1d.target(nodes)) ** 2).sum())


def train_crossing(kind: str, *, gamma=0.99, seed=0, steps=200, lr=0.05, batch=128, rtol=1e-3):
    r"""Fit :math:`x \mapsto -x^3` on :math:`U[-1, 1]` with one MLP field tied over 15 unit steps.

    ``kind`` ``"momentum"``: a :class:`~mode.MomentumNet` of momentum ``gamma`` (``gamma = 0`` is the
    ResNet); ``"node"``: the first-order NODE :math:`\dot x = f(x)` on :math:`[0, 15]` by
    :func:`mode.odeint` at ``rtol``. The MLP is :func:`mode.experiments.crossing_1d.mlp` with its wide first
    layer, from ``seed``.

    Returns
    -------
    dict
        ``field`` (the trained MLP), ``map`` (input -> output, evaluated at ``rtol = 1e-10`` for the NODE),
        ``history`` (training losses) and, for the NODE, ``nfe_history`` (forward evaluations at each
        training step) and their means ``nfe_forward``, ``nfe_backward``.
    """
    field = crossing_1d.mlp(torch.Generator().manual_seed(seed), first_scale=crossing_1d.FIRST_LAYER_SCALE)
    depth, dtype = crossing_1d.DEPTH, crossing_1d.DTYPE
    data = torch.Generator().manual_seed(seed)
    solutions: list[ODESolution] = []
    if kind == "momentum":
        net = MomentumNet([field] * depth, gamma=gamma, backprop="autograd")
        train_map, final_map = net, net
    elif kind == "node":

        def train_map(x):
            solution = odeint(field, x, eps=0.0, T=float(depth), rtol=rtol, atol=rtol * 1e-2)
            solutions.append(solution)
            return solution.x

        def final_map(x):
            return crossing_1d.node_map(field, x, T=float(depth), rtol=1e-10)

    else:
        raise ValueError(f"kind must be 'momentum' or 'node', got {kind!r}")

    def loss():
        x = 2 * torch.rand(batch, 1, generator=data, dtype=dtype) - 1
        return ((train_map(x) - crossing_1d.target(x)) ** 2).mean()

    history = fit(loss, field.parameters(), steps=steps, lr=lr, context=_Quiet())
    result = {"field": field, "map": final_map, "history": np.array(history)}
    if solutions:
        result["nfe_history"] = np.array([s.nfe_forward for s in solutions])
        result["nfe_forward"] = float(np.mean(result["nfe_history"]))
        result["nfe_backward"] = float(np.mean([s.nfe_backward for s in solutions]))
    return result


def train_rings(gamma: float, *, seed=0, per_ring=64, steps=300, lr=0.1, first_scale=0.5):
    r"""Separate the four nested rings of :mod:`mode.experiments.nested_rings` with 15 tied unit steps.

    A :class:`~mode.MomentumNet` of momentum ``gamma`` over one MLP :math:`2 \to 16 \to 2` whose output is
    the two logits (cross-entropy, full batch of ``per_ring`` points per ring, Adam).

    Returns
    -------
    dict
        ``net``, ``field``, ``history`` and ``accuracy`` on a fresh test set of 500 points per ring
        (``x_test``, ``y_test``).
    """
    data = torch.Generator().manual_seed(seed)
    x, y = nested_rings.rings(per_ring, data)
    x_test, y_test = nested_rings.rings(500, data)
    field = crossing_1d.mlp(torch.Generator().manual_seed(seed), dim=2, first_scale=first_scale)
    net = MomentumNet([field] * crossing_1d.DEPTH, gamma=gamma, backprop="autograd")
    history = fit(
        lambda: torch.nn.functional.cross_entropy(net(x), y),
        field.parameters(),
        steps=steps,
        lr=lr,
        context=_Quiet(),
    )
    with torch.no_grad():
        accuracy = float((net(x_test).argmax(1) == y_test).double().mean())
    return {
        "net": net,
        "field": field,
        "history": np.array(history),
        "accuracy": accuracy,
        "x_test": x_test,
        "y_test": y_test,
    }


def train_spheres(model: str, d: int, *, seed=0, steps=30, lr=3e-2, train=256, test=1024, tol=1e-2):
    r"""Train one classifier of :mod:`mode.experiments.spheres` (NODE, ANODE or momentum ODE) on the ball
    inside a shell in :math:`\mathbb R^d`, solved by :func:`mode.odeint` (dopri5, adjoint) at
    ``rtol = atol = tol``.

    The evaluations of the MLP field are counted twice: by the solver (:class:`~mode.ODESolution`'s
    ``nfe_forward``, ``nfe_backward``) and by a forward hook on the field module itself.

    Returns
    -------
    dict
        ``classifier``, ``history``, test ``loss`` and ``accuracy`` (solved at ``rtol = 1e-6``), mean
        ``nfe_forward`` and ``nfe_backward`` per training step, their totals ``solver_calls`` and the
        hook's count ``hook_calls`` over training.
    """
    generator = torch.Generator().manual_seed(seed)
    x, y = spheres.concentric_spheres(train, d, generator)
    x_test, y_test = spheres.concentric_spheres(test, d, generator)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        classifier = spheres.Classifier(model, d, tol)
    hook_calls = [0]

    def count(*_):
        hook_calls[0] += 1

    handle = classifier.field.register_forward_hook(count)
    solutions: list[ODESolution] = []

    def loss():
        scores, solution = classifier(x)
        solutions.append(solution)
        return spheres.logistic_loss(scores, y)

    try:
        history = fit(loss, classifier.parameters(), steps=steps, lr=lr, context=_Quiet())
    finally:
        handle.remove()
    classifier.tol = 1e-6
    with torch.no_grad():
        scores, _ = classifier(x_test)
    return {
        "classifier": classifier,
        "history": np.array(history),
        "loss": float(spheres.logistic_loss(scores, y_test)),
        "accuracy": float(((scores > 0) == (y_test > 0)).double().mean()),
        "nfe_forward": float(np.mean([s.nfe_forward for s in solutions])),
        "nfe_backward": float(np.mean([s.nfe_backward for s in solutions])),
        "solver_calls": int(sum(s.nfe_forward + s.nfe_backward for s in solutions)),
        "hook_calls": hook_calls[0],
    }
