"""Step time and gradient error of the methods at one depth of a workload, measured in one process.

The ResNet and MomentumNet methods share one set of blocks, memcnn has its couplings, and all run on
one input. The first round runs one training step of every method, timed on the wall clock (the first
step pays for any compilation), and compares its gradients with the references; each later round times
one step of every method in turn, so that slow changes of the machine (clock, other load) fall on all
methods alike.

On the CPU with one thread, a step is timed by the CPU time of this process, which excludes the time
other processes hold the core (the backward pass of a CPU graph runs on the calling thread); otherwise,
by wall-clock time after synchronising the device.
"""

from __future__ import annotations

import copy
import math
import statistics
import time

import torch

from mode.bench.methods import (
    COUPLED,
    REFERENCE,
    MomentumnetRule,
    autograd_net,
    build,
    family,
    forward_loss,
    make_layers,
)
from mode.bench.workloads import Settings, Workload, make_input
from mode.runtime import torch_threads


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock_name(device: str, threads: int) -> str:
    """``"process_time"`` or ``"perf_counter"``: the :mod:`time` function that steps are timed with."""
    return "process_time" if device == "cpu" and threads == 1 else "perf_counter"


def _step(net, x: torch.Tensor, params: list[torch.nn.Parameter], clock=time.perf_counter):
    """One training step from cleared gradients; returns its duration on ``clock``, its wall-clock
    duration and the gradients of ``x`` and of ``params``, in that order."""
    for p in params:
        p.grad = None
    _sync(x.device)
    start, wall = clock(), time.perf_counter()
    leaf, loss = forward_loss(net, x)
    loss.backward()
    _sync(x.device)
    return clock() - start, time.perf_counter() - wall, [leaf.grad, *(p.grad for p in params)]


def relative_error(got: list[torch.Tensor], want: list[torch.Tensor]) -> dict[str, float | None]:
    """``|got - want| / |want|`` of the input gradient (first) and of all parameter gradients together.

    Norms are taken in float64; a part whose error is not finite (gradients that overflowed) is ``None``.
    """

    def ratio(pairs) -> float | None:
        diff = sum((g.double() - w.double()).square().sum().item() for g, w in pairs)
        norm = sum(w.double().square().sum().item() for _, w in pairs)
        error = (diff / norm) ** 0.5
        return error if math.isfinite(error) else None

    pairs = list(zip(got, want, strict=True))
    return {"input": ratio(pairs[:1]), "parameters": ratio(pairs[1:])}


def _parameters(layers: list[torch.nn.Module]) -> list[torch.nn.Parameter]:
    return [p for layer in layers for p in layer.parameters()]


class _Models:
    """The networks of ``methods`` at one depth: one set of layers per :func:`family`, shared."""

    def __init__(self, methods, depth: int, workload: Workload, gamma: float, seed: int, device):
        self.gamma = gamma
        kinds = dict.fromkeys(family(method) for method in methods)
        self.layers = {kind: make_layers(kind, depth, workload, seed, device) for kind in kinds}
        self.nets = {method: build(method, self.layers[family(method)], gamma) for method in methods}

    def params(self, method: str) -> list[torch.nn.Parameter]:
        return _parameters(self.layers[family(method)])

    def float64_gradients(self, kind: str, x: torch.Tensor):
        """Wall-clock time and gradients of plain autograd over float64 copies of the ``kind`` layers."""
        layers = [copy.deepcopy(layer).double() for layer in self.layers[kind]]
        return _step(autograd_net(kind, layers, self.gamma), x.double(), _parameters(layers))[1:]


def _first_round(models: _Models, x: torch.Tensor, float64: bool) -> tuple[dict[str, dict], float | None]:
    """Every method's first training step: its wall-clock time and its gradient errors.

    The float32 references need autograd's memory and run only where autograd itself is measured; the
    float64 ones only where ``float64``. The float64 references and autograd run first, the references
    of momentumnet's and memcnn's own models right after those methods, so that each method's
    gradients are compared and dropped at once.

    Returns
    -------
    (dict, float or None)
        Per method ``first_step_wall_s``, ``grad_error``, ``grad_error_float64`` (``None`` where there is
        no reference) and for momentumnet ``grad_error_own_rule``; the wall-clock time of the float64
        steps together, or ``None``.
    """
    exact, walls = {}, []
    if float64:
        for kind in models.layers:
            wall, exact[kind] = models.float64_gradients(kind, x)
            walls.append(wall)
    references = REFERENCE in models.nets
    rows, reference = {}, None
    for method in sorted(models.nets, key=lambda method: method != REFERENCE):
        params = models.params(method)
        _, wall, got = _step(models.nets[method], x, params)
        row = rows[method] = {"first_step_wall_s": wall, "grad_error": None, "grad_error_float64": None}
        if method == "resnet":
            continue  # a different model (gamma = 0): the step only warms it up
        if family(method) in exact:
            row["grad_error_float64"] = relative_error(got, exact[family(method)])
        if method == REFERENCE:
            reference = got
        elif references and method in COUPLED:
            own = autograd_net(family(method), models.layers[family(method)], models.gamma)
            row["grad_error"] = relative_error(got, _step(own, x, params)[2])
        elif references:
            row["grad_error"] = relative_error(got, reference)
            if method == "momentumnet":
                own_rule = _step(MomentumnetRule(models.layers["blocks"], models.gamma), x, params)[2]
                row["grad_error_own_rule"] = relative_error(got, own_rule)
    return rows, (sum(walls) if walls else None)


def measure_depth(
    depth: int,
    workload: Workload,
    settings: Settings,
    seed: int,
    device: str,
    methods: list[str],
    float64: bool,
) -> dict:
    """Time training steps of ``methods`` (interleaved rounds, see :class:`.Settings` for how many) and
    compare their gradients, on ``settings.threads`` torch threads.

    Parameters
    ----------
    depth : int
        Number of layers :math:`L`.
    workload : Workload
        The blocks and the input.
    settings : Settings
        ``gamma``, ``threads`` and the number of rounds.
    seed : int
        Seed of the weights and the input.
    device : str
        ``"cpu"`` or ``"cuda"``.
    methods : list of str
        Keys of :data:`mode.bench.methods.METHODS`.
    float64 : bool
        Whether to run the float64 references.

    Returns
    -------
    dict
        ``rows``: per method ``step_s`` (median on the step clock), ``step_s_all`` (every timed step),
        ``step_wall_s`` (median wall-clock time), ``first_step_wall_s`` (wall-clock time of the first
        step in this fresh process), ``grad_error`` (relative error of the input and parameter gradients
        against MomentumNet autograd; for memcnn against plain autograd through its couplings; ``None``
        for autograd itself, for the ResNet, a different model, and where autograd was not run),
        ``grad_error_float64`` (the same against float64 autograd of the method's model, which shows how
        much of ``grad_error`` float32 autograd itself carries) and, for ``momentumnet``,
        ``grad_error_own_rule`` against autograd through its own update rule
        (:class:`~mode.bench.methods.MomentumnetRule`). ``reference_wall_s``: wall-clock time of the
        float64 MomentumNet autograd step, or ``None``.
    """
    with torch_threads(settings.threads):
        return _measure_depth(depth, workload, settings, seed, torch.device(device), methods, float64)


def _measure_depth(depth, workload, settings, seed, device, methods, float64) -> dict:
    models = _Models(methods, depth, workload, settings.gamma, seed, device)
    x = make_input(workload, seed, device)
    rows, reference_wall = _first_round(models, x, float64)
    for row in rows.values():
        row.update(step_s_all=[], wall_s_all=[])
    clock = getattr(time, clock_name(device.type, settings.threads))
    order = list(methods)

    def sampled_enough(rounds: int) -> bool:
        if rounds < settings.repeats:
            return False
        least = min(sum(row["step_s_all"]) for row in rows.values())
        return least >= settings.min_seconds or rounds >= settings.max_rounds

    rounds = 0
    while not sampled_enough(rounds):
        # Rotating the order spreads any cost of following a particular method over all methods.
        shift = rounds % len(order)
        for method in order[shift:] + order[:shift]:
            seconds, wall, _ = _step(models.nets[method], x, models.params(method), clock)
            rows[method]["step_s_all"].append(seconds)
            rows[method]["wall_s_all"].append(wall)
        rounds += 1
    for row in rows.values():
        row["step_s"] = statistics.median(row["step_s_all"])
        row["step_wall_s"] = statistics.median(row.pop("wall_s_all"))
    return {"rows": rows, "reference_wall_s": reference_wall}
