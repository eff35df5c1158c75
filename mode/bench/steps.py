"""Step time and gradient error of every method at one depth, measured in one process.

All methods share one set of blocks and one input. The first round runs one untimed training step of
every method and compares its gradients; each later round times one step of every method in turn, so
that slow changes of the machine (clock, other load) fall on all methods alike.

On the CPU with one thread, a step is timed by the CPU time of this process, which excludes the time
other processes hold the core (the backward pass of a CPU graph runs on the calling thread); otherwise,
by wall-clock time after synchronising the device.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch

from mode.bench.methods import (
    METHODS,
    REFERENCE,
    MomentumnetRule,
    Workload,
    build,
    forward_loss,
    make_blocks,
    make_input,
)
from mode.runtime import torch_threads


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock_name(device: str, threads: int) -> str:
    """``"process_time"`` or ``"perf_counter"``: the :mod:`time` function that steps are timed with."""
    return "process_time" if device == "cpu" and threads == 1 else "perf_counter"


def _step(net, x: torch.Tensor, params: list[torch.nn.Parameter], clock=time.perf_counter):
    """One training step from cleared gradients; returns its duration on ``clock`` and the gradients of
    ``x`` and of ``params``, in that order."""
    for p in params:
        p.grad = None
    _sync(x.device)
    start = clock()
    leaf, loss = forward_loss(net, x)
    loss.backward()
    _sync(x.device)
    return clock() - start, [leaf.grad, *(p.grad for p in params)]


def relative_error(got: list[torch.Tensor], want: list[torch.Tensor]) -> dict[str, float]:
    """``|got - want| / |want|`` of the input gradient (first) and of all parameter gradients together.

    Norms are taken in float64; a non-finite ``got`` gives a non-finite error.
    """

    def ratio(pairs) -> float:
        diff = sum((g.double() - w.double()).square().sum().item() for g, w in pairs)
        norm = sum(w.double().square().sum().item() for _, w in pairs)
        return (diff / norm) ** 0.5

    pairs = list(zip(got, want, strict=True))
    return {"input": ratio(pairs[:1]), "parameters": ratio(pairs[1:])}


def _float64_gradients(blocks: list[torch.nn.Module], gamma: float, x: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of MomentumNet autograd in float64 on copies of ``blocks`` and the same input."""
    blocks = [copy.deepcopy(block).double() for block in blocks]
    params = [p for block in blocks for p in block.parameters()]
    return _step(build(REFERENCE, blocks, gamma), x.double(), params)[1]


def _gradient_errors(nets: dict, blocks: list[torch.nn.Module], gamma: float, x, params) -> dict[str, dict]:
    """The untimed first round: every method's gradient error against the references.

    The references run first so that each method's gradients are compared and dropped at once.
    """
    exact = _float64_gradients(blocks, gamma, x)
    reference = _step(nets[REFERENCE], x, params)[1]
    errors = {REFERENCE: {"grad_error_float64": relative_error(reference, exact)}}
    for method, net in nets.items():
        if method == REFERENCE:
            continue
        got = _step(net, x, params)[1]
        if method == "resnet":
            continue  # a different model (gamma = 0): this step only warms it up
        errors[method] = {
            "grad_error": relative_error(got, reference),
            "grad_error_float64": relative_error(got, exact),
        }
        if method == "momentumnet":
            own_rule = _step(MomentumnetRule(blocks, gamma), x, params)[1]
            errors[method]["grad_error_own_rule"] = relative_error(got, own_rule)
    return errors


def measure_depth(depth: int, workload: Workload, seed: int, device: str) -> dict[str, dict]:
    """Time training steps of every method (interleaved rounds, see :class:`Workload` for how many) and
    compare their gradients, on ``workload.threads`` torch threads.

    Returns
    -------
    dict
        Per method: ``step_s`` (median), ``step_s_all`` (every timed step), ``grad_error`` (relative
        error of the input and parameter gradients against MomentumNet autograd; ``None`` for the
        reference itself and for the ResNet, a different model), ``grad_error_float64`` (the same
        against MomentumNet autograd in float64, which shows how much of ``grad_error`` float32
        autograd itself carries; ``None`` for the ResNet) and, for ``momentumnet``,
        ``grad_error_own_rule`` against autograd through its own update rule
        (:class:`~mode.bench.methods.MomentumnetRule`).
    """
    with torch_threads(workload.threads):
        return _measure_depth(depth, workload, seed, torch.device(device))


def _measure_depth(depth: int, workload: Workload, seed: int, device: torch.device) -> dict[str, dict]:
    blocks = make_blocks(depth, workload, seed, device)
    params = [p for block in blocks for p in block.parameters()]
    x = make_input(workload, seed, device)
    nets = {method: build(method, blocks, workload.gamma) for method in METHODS}
    errors = _gradient_errors(nets, blocks, workload.gamma, x, params)
    rows = {
        method: {"grad_error": None, "grad_error_float64": None, **errors.get(method, {}), "step_s_all": []}
        for method in METHODS
    }
    clock = getattr(time, clock_name(device.type, workload.threads))
    order = list(METHODS)

    def sampled_enough(rounds: int) -> bool:
        if rounds < workload.repeats:
            return False
        least = min(sum(row["step_s_all"]) for row in rows.values())
        return least >= workload.min_seconds or rounds >= workload.max_rounds

    rounds = 0
    while not sampled_enough(rounds):
        # Rotating the order spreads any cost of following a particular method over all methods.
        shift = rounds % len(order)
        for method in order[shift:] + order[:shift]:
            rows[method]["step_s_all"].append(_step(nets[method], x, params, clock)[0])
        rounds += 1
    for row in rows.values():
        row["step_s"] = statistics.median(row["step_s_all"])
    return rows
