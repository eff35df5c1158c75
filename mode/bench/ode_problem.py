r"""The problems and solvers of ``mode bench ode``: a seeded vector field, initial state and loss, and one
forward and backward pass of each compared method.

The system is :math:`\varepsilon \ddot x + \dot x = f(x, t)` on :math:`[0, T]`, in phase space
:math:`\dot x = v,\ \varepsilon \dot v = f(x, t) - v`, with

.. math::
   f(x, t) = W_2 \tanh(W_1 x + t c + b_1) + b_2 - A x

(:math:`A = 0` for the MLP workloads) and the loss :math:`L = \langle a, x(T) \rangle + \langle b, v(T)
\rangle` for fixed random :math:`a, b`. The gradient measured is that of :math:`L` with respect to the
parameters :math:`W_1, c, b_1, W_2, b_2` and to :math:`x_0`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchdiffeq

import mode

#: Gain of the MLP's weights (variance ``gain**2 / fan_in``): large enough that the field is not close
#: to linear over the trajectory, small enough that it stays contractive-ish over ``T = 1``.
WEIGHT_GAIN = 1.5


@dataclass(frozen=True)
class OdeWorkload:
    """One benchmark problem.

    Attributes
    ----------
    name : str
        Its key in the results.
    dim, batch, hidden : int
        State dimension :math:`d`, batch size and width of the tanh MLP.
    eps : float
        The mass :math:`\\varepsilon`.
    stiff : bool
        Whether :math:`f` has the damping :math:`-A x`, :math:`A = Q \\operatorname{diag}(\\lambda) Q^\\top`
        with eigenvalues :math:`\\lambda` log-spaced over ``[lambda_min, lambda_max]`` and a seeded random
        rotation :math:`Q`.
    """

    name: str
    dim: int
    batch: int
    hidden: int
    eps: float
    stiff: bool = False
    lambda_min: float = 1.0
    lambda_max: float = 100.0

    def spectrum(self) -> dict:
        r"""The eigenvalues :math:`\mu` of the linear part of the phase-space system, :math:`\varepsilon
        \mu^2 + \mu + \lambda = 0` for each eigenvalue :math:`\lambda` of :math:`A` (``None`` without
        :math:`A`): their largest and smallest moduli, and the steps an explicit method needs to stay
        stable at the largest (:math:`|\mu| h \le 2`, leapfrog's bound; RK4's is about 2.8)."""
        if not self.stiff:
            return {"mu_max": None, "mu_min": None, "stability_steps": None}
        moduli = []
        for lam in (self.lambda_min, self.lambda_max):
            disc = 1 - 4 * self.eps * lam
            if disc >= 0:
                roots = [(-1 + s * math.sqrt(disc)) / (2 * self.eps) for s in (1, -1)]
                moduli += [abs(r) for r in roots]
            else:
                moduli.append(math.sqrt(lam / self.eps))
        return {"mu_max": max(moduli), "mu_min": min(moduli), "stability_steps": math.ceil(max(moduli) / 2)}


class Field(torch.nn.Module):
    r""":math:`f(x, t) = W_2 \tanh(W_1 x + t c + b_1) + b_2 - A x`, with :math:`A` a buffer (not trained)."""

    def __init__(self, workload: OdeWorkload, generator: torch.Generator) -> None:
        super().__init__()
        d, h = workload.dim, workload.hidden

        def normal(*shape, scale):
            return torch.nn.Parameter(scale * torch.randn(*shape, generator=generator, dtype=torch.float64))

        self.w1 = normal(h, d, scale=WEIGHT_GAIN / math.sqrt(d))
        self.c = normal(h, scale=1.0)
        self.b1 = normal(h, scale=0.1)
        self.w2 = normal(d, h, scale=WEIGHT_GAIN / math.sqrt(h))
        self.b2 = normal(d, scale=0.1)
        damping = None
        if workload.stiff:
            q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
            lams = torch.logspace(
                math.log10(workload.lambda_min), math.log10(workload.lambda_max), d, dtype=torch.float64
            )
            damping = (q * lams) @ q.T
        self.register_buffer("a", damping)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = torch.tanh(x @ self.w1.T + t * self.c + self.b1) @ self.w2.T + self.b2
        return out if self.a is None else out - x @ self.a


@dataclass
class Problem:
    """A field, an initial state and the loss weights, in one dtype; ``x0`` is a leaf that requires grad."""

    field: Field
    x0: torch.Tensor
    v0: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    eps: float

    def loss(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """:math:`\\langle a, x(T) \\rangle + \\langle b, v(T) \\rangle`."""
        return (self.a * x).sum() + (self.b * v).sum()

    def leaves(self) -> list[torch.Tensor]:
        """The tensors differentiated: the field's parameters, then ``x0``."""
        return [*self.field.parameters(), self.x0]


def make_problem(workload: OdeWorkload, seed: int, dtype: torch.dtype) -> Problem:
    """The seeded problem of ``workload``: drawn in float64, then converted, so that every dtype solves
    the same problem (rounded)."""
    generator = torch.Generator().manual_seed(seed)
    field = Field(workload, generator)
    shape = (workload.batch, workload.dim)
    x0 = torch.randn(*shape, generator=generator, dtype=torch.float64)
    v0 = 0.5 * torch.randn(*shape, generator=generator, dtype=torch.float64)
    scale = 1 / math.sqrt(x0.numel())
    a = scale * torch.randn(*shape, generator=generator, dtype=torch.float64)
    b = scale * torch.randn(*shape, generator=generator, dtype=torch.float64)
    return Problem(
        field=field.to(dtype),
        x0=x0.to(dtype).requires_grad_(True),
        v0=v0.to(dtype),
        a=a.to(dtype),
        b=b.to(dtype),
        eps=workload.eps,
    )


@dataclass(frozen=True)
class Spec:
    """One compared method at one setting.

    Attributes
    ----------
    method : str
        A key of :data:`~mode.bench.ode_problem.METHODS`.
    steps : int, optional
        Fixed steps over :math:`[0, T]`.
    rtol : float, optional
        Tolerance of the adaptive methods (``atol = rtol``).
    """

    method: str
    steps: int | None = None
    rtol: float | None = None

    @property
    def setting(self) -> str:
        """``"N=..."`` or ``"rtol=..."``."""
        return f"N={self.steps}" if self.steps is not None else f"rtol={self.rtol:g}"


#: The compared methods: name -> (family, description). ``family`` groups them in the figures.
METHODS = {
    "dopri5-direct": ("torchdiffeq", "torchdiffeq dopri5, backpropagation through the solver's operations"),
    "dopri5-adjoint": (
        "torchdiffeq",
        "torchdiffeq dopri5, odeint_adjoint (backward solve of the adjoint ODE)",
    ),
    "rk4-direct": ("torchdiffeq", "torchdiffeq fixed-grid rk4 (3/8 rule), backpropagation through the steps"),
    "rk4-adjoint": ("torchdiffeq", "torchdiffeq fixed-grid rk4, odeint_adjoint with the same grid backward"),
    "mali": (
        "TorchDiffEqPack",
        "MALI: TorchDiffEqPack 1.0.1 odesolve_adjoint_sym12, method fixedstep_sym12async (asynchronous "
        "leapfrog on the phase-space system, inverted in floating point in the backward pass)",
    ),
    "reversible-momentum": (
        "mode",
        "mode.odeint backprop='reversible', method='momentum' (exact arithmetic)",
    ),
    "reversible-leapfrog": (
        "mode",
        "mode.odeint backprop='reversible', method='leapfrog' (exact arithmetic)",
    ),
    "checkpoint-leapfrog": (
        "mode",
        "mode.odeint backprop='checkpoint', method='leapfrog' (sqrt(N) segments)",
    ),
}

#: mode's reversible methods and their schemes.
REVERSIBLE = {"reversible-momentum": "momentum", "reversible-leapfrog": "leapfrog"}


class PhaseSpace(torch.nn.Module):
    r"""The phase-space right-hand side :math:`(x, v) \mapsto (v, (f(x, t) - v) / \varepsilon)` as
    TorchDiffEqPack calls it, ``func(t, (x, v))``, counting its evaluations."""

    def __init__(self, field: Field, eps: float) -> None:
        super().__init__()
        self.field, self.eps, self.nfe = field, eps, 0

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        self.nfe += 1
        x, v = state
        return v, (self.field(x, torch.as_tensor(t, dtype=x.dtype)) - v) / self.eps


def solve(problem: Problem, spec: Spec, T: float = 1.0) -> tuple[torch.Tensor, object]:
    """The loss of one forward solve with ``spec``, and a function returning ``(nfe_forward,
    nfe_backward)`` (call it after the backward pass)."""
    if spec.method == "mali":
        # Imported here: an optional dependency (the bench extra).
        from TorchDiffEqPack import odesolve_adjoint_sym12

        func = PhaseSpace(problem.field, problem.eps)
        options = {"method": "fixedstep_sym12async", "h": T / spec.steps, "t0": 0.0, "t1": T}
        x, v = odesolve_adjoint_sym12(func, (problem.x0, problem.v0), options=options)
        forward = func.nfe
        return problem.loss(x, v), lambda: (forward, func.nfe - forward)
    kwargs: dict[str, object] = {}
    if spec.method.startswith(("dopri5", "rk4")):
        base, backprop = spec.method.split("-")
        kwargs.update(method=base, backprop="autograd" if backprop == "direct" else "adjoint")
        if spec.rtol is not None:
            kwargs.update(rtol=spec.rtol, atol=spec.rtol)
    else:
        backprop, scheme = spec.method.split("-")
        kwargs.update(method=scheme, backprop=backprop)
    if spec.steps is not None:
        kwargs["steps"] = spec.steps
    solution = _odeint(problem, T, **kwargs)
    return problem.loss(solution.x, solution.v), lambda: (solution.nfe_forward, solution.nfe_backward)


def _odeint(problem: Problem, T: float, **kwargs) -> mode.ODESolution:
    """:func:`mode.odeint` of ``problem`` from :math:`(x_0, v_0)` to ``T``."""
    return mode.odeint(problem.field, problem.x0, problem.v0, eps=problem.eps, T=T, **kwargs)


def gradients(problem: Problem, spec: Spec, T: float = 1.0) -> tuple[list[torch.Tensor], tuple[int, int]]:
    """One forward and backward pass: the gradients of :meth:`~mode.bench.ode_problem.Problem.leaves` and
    the evaluation counts.

    ``.grad`` is accumulated into (as in training), so the caller zeroes it between passes.
    """
    loss, nfe = solve(problem, spec, T)
    loss.backward()
    return [leaf.grad for leaf in problem.leaves()], nfe()


def tight_gradients(
    problem: Problem, method: str, backprop: str, tol: float, T: float = 1.0
) -> tuple[list[torch.Tensor], int]:
    """Gradients of a torchdiffeq solve at ``rtol = atol = tol`` (``problem`` in float64 for a reference),
    by ``torch.autograd.grad`` (no ``.grad`` touched), with the total evaluations of ``f``."""
    solution = _odeint(problem, T, method=method, backprop=backprop, rtol=tol, atol=tol)
    grads = torch.autograd.grad(problem.loss(solution.x, solution.v), problem.leaves())
    return list(grads), solution.nfe_forward + solution.nfe_backward


def relative_errors(grads: list[torch.Tensor], reference: list[torch.Tensor]) -> dict[str, float | None]:
    r""":math:`\|g - g_\text{ref}\|_2 / \|g_\text{ref}\|_2` in float64 over all leaves (``all``), the
    parameters alone (``params``) and :math:`x_0` alone (``x0``; the last leaf); ``None`` where ``g`` is
    not finite."""

    def error(parts, refs):
        g = torch.cat([p.detach().double().reshape(-1) for p in parts])
        r = torch.cat([q.detach().double().reshape(-1) for q in refs])
        value = float((g - r).norm() / r.norm())
        return value if math.isfinite(value) else None

    return {
        "all": error(grads, reference),
        "params": error(grads[:-1], reference[:-1]),
        "x0": error(grads[-1:], reference[-1:]),
    }


def discrete_gap(problem: Problem, scheme: str, steps: int, T: float = 1.0) -> dict[str, float | None]:
    """Relative gap between mode's reversible gradient and autograd's through the same discrete solve
    (same scheme, same steps), in ``problem``'s dtype (float64 in the benchmark)."""
    results = []
    for backprop in ("reversible", "autograd"):
        solution = _odeint(problem, T, method=scheme, backprop=backprop, steps=steps)
        results.append(torch.autograd.grad(problem.loss(solution.x, solution.v), problem.leaves()))
    return relative_errors(*results)


def torchdiffeq_version() -> str:
    """The installed torchdiffeq's version (for the record)."""
    return getattr(torchdiffeq, "__version__", "unknown")
