import json
import math

import pytest
import torch

from mode.bench.ode import QUICK_WORKLOADS, pareto_front, run_ode_benchmark
from mode.bench.ode_points import finite, measure_reference
from mode.bench.ode_problem import (
    METHODS,
    REVERSIBLE,
    OdeWorkload,
    Problem,
    Spec,
    gradients,
    relative_errors,
    tight_gradients,
)
from mode.cli import main

#: The stiff-ish quick workload alone: it exercises every method and the damping buffer; the other quick
#: workload differs only in the field.
STIFF = QUICK_WORKLOADS[-1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ode")
    return out, run_ode_benchmark(quick=True, seed=1, out=out, workloads=(STIFF,))


def test_quick_run_is_well_formed(run):
    out, results = run
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    for name in ("pareto", "error_time", "memory_steps"):
        assert (out / f"{name}.png").stat().st_size > 0
    rows = results["rows"]
    assert {row["method"] for row in rows} == set(METHODS)
    for row in rows:
        assert "skipped" not in row and row["error"] is None, row
        for key in ("activation_bytes", "step_s", "grad_error", "grad_error_params", "grad_error_x0"):
            assert finite(row[key]), (row["method"], row["setting"], key)
        assert row["nfe_forward"] > 0
    assert any(row["pareto"] for row in rows)
    assert finite(results["references"][STIFF.name]["cross_check"]["gap"])
    assert set(results["targets"][STIFF.name]) == {
        "reversible_memory_flat_momentum",
        "reversible_memory_flat_leapfrog",
        "discrete_gap_momentum",
        "discrete_gap_leapfrog",
        "leapfrog_on_pareto_front",
    }
    for target in results["targets"][STIFF.name].values():
        assert {"target", "threshold", "value", "met", "by_steps"} <= set(target)


def test_reversible_equals_discrete_gradient_in_float64(run):
    gaps = run[1]["float64_gaps"]
    assert {(gap["method"], gap["steps"]) for gap in gaps} == {(m, n) for m in REVERSIBLE for n in (16, 64)}
    for gap in gaps:
        assert gap["gap"] <= 1e-10, gap
    for scheme in REVERSIBLE.values():
        assert run[1]["targets"][STIFF.name][f"discrete_gap_{scheme}"]["met"]


def test_pareto_front():
    points = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (2.0, 3.0), (5.0, 1.0), (0.5, 9.0)]
    # (3, 4) is beaten by (2, 3) in both; (5, 1) by (4, 1) in memory; the equal pair stays.
    assert pareto_front(points) == [True, True, False, True, True, False, True]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0)]) == [True]


class Linear(torch.nn.Module):
    """f(x) = -k x: the phase-space flow is the matrix exponential, per coordinate."""

    def __init__(self):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(3.0, dtype=torch.float64))

    def forward(self, x, t):
        return -self.k * x


def _exact_gradients(problem: Problem, T: float) -> list[torch.Tensor]:
    eps = problem.eps
    # d/dt (x, v) = M (x, v) with M = [[0, 1], [-k / eps, -1 / eps]], kept differentiable in k.
    generator = torch.tensor(
        [[0.0, 1.0], [0.0, -1 / eps]], dtype=torch.float64
    ) + problem.field.k * torch.tensor([[0.0, 0.0], [-1 / eps, 0.0]], dtype=torch.float64)
    flow = torch.linalg.matrix_exp(generator * T)
    x = flow[0, 0] * problem.x0 + flow[0, 1] * problem.v0
    v = flow[1, 0] * problem.x0 + flow[1, 1] * problem.v0
    return list(torch.autograd.grad(problem.loss(x, v), problem.leaves()))


def test_reference_gradient_matches_the_exact_one():
    generator = torch.Generator().manual_seed(0)
    shape = (3, 4)
    problem = Problem(
        field=Linear(),
        x0=torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_(True),
        v0=torch.randn(*shape, generator=generator, dtype=torch.float64),
        a=torch.randn(*shape, generator=generator, dtype=torch.float64),
        b=torch.randn(*shape, generator=generator, dtype=torch.float64),
        eps=0.5,
    )
    exact = _exact_gradients(problem, 1.0)
    grads, nfe = tight_gradients(problem, "dopri5", "autograd", 1e-11)
    assert nfe > 0
    assert relative_errors(grads, exact)["all"] < 1e-9
    # The cross-check's path: torchdiffeq's rk4 with the adjoint method, through .grad.
    check, (forward, backward) = gradients(problem, Spec("rk4-adjoint", steps=512))
    assert forward == 4 * 512 and backward > 0
    assert relative_errors(check, exact)["all"] < 1e-9


def test_relative_errors():
    reference = [torch.tensor([3.0, 4.0]), torch.tensor([0.0, 1.0])]
    errors = relative_errors([torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0])], reference)
    assert errors["params"] == 0.0
    assert errors["x0"] == pytest.approx(1.0)
    assert errors["all"] == pytest.approx(1 / math.sqrt(26))
    assert relative_errors([torch.tensor([math.nan, 4.0]), reference[1]], reference)["all"] is None


def test_reference_cross_check(tmp_path):
    workload = OdeWorkload("tiny", dim=3, batch=2, hidden=4, eps=0.5, stiff=True, lambda_max=10.0)
    path = tmp_path / "reference.pt"
    answer = measure_reference(workload, seed=0, T=1.0, tol=1e-10, check_steps=512, path=str(path))
    assert answer["cross_check"]["gap"] < 1e-6
    saved = torch.load(path)
    assert relative_errors(saved["cross_check"], saved["reference"])["all"] == answer["cross_check"]["gap"]


def test_cli_refuses_an_output_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["bench", "ode", "--quick", "--out", str(blocker)]) == 2
    assert "--out" in capsys.readouterr().err
