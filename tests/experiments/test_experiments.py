"""The experiments of ``mode experiment`` / ``mode reproduce``.

The default suite runs the end-to-end ``mode reproduce --quick``, which asserts every experiment's
criteria and outputs at ``--quick`` size; the sabotage tests (``test_*_criteria.py``) run reduced sizes
that still test the same properties (the sizes below say what is cut). ``-m slow`` runs each experiment on
its own at the reduced size and at ``--quick`` size as well.
"""

import json
import math
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import mode.experiments.convert_finetune as convert_finetune
import mode.experiments.crossing_1d as crossing_1d
import mode.experiments.depth_limit as depth_limit
import mode.experiments.depth_sweep as depth_sweep
import mode.experiments.discretizations as discretizations
import mode.experiments.learning_to_optimize as learning_to_optimize
import mode.experiments.linear_maps as linear_maps
import mode.experiments.memory_depth as memory_depth
import mode.experiments.nested_rings as nested_rings
import mode.experiments.parity as parity
import mode.experiments.second_order_family as second_order_family
import mode.experiments.spheres as spheres
import mode.experiments.transformer_depth as transformer_depth
import mode.nn
from mode.cli import main
from mode.datasets import cifar10, digits
from mode.experiments import Context, run_experiment
from mode.experiments.runner import load
from mode.nn.resnet import CifarResNet
from mode.theory import has_real_logarithm, momentum_flow_matrix

#: Report order.
NAMES = (
    "linear-maps",
    "crossing-1d",
    "parity",
    "nested-rings",
    "spheres",
    "learning-to-optimize",
    "discretizations",
    "depth-limit",
    "depth-sweep",
    "memory-depth",
    "transformer-depth",
    "convert-finetune",
    "second-order-family",
)

#: Name -> (module, settings replacing its QUICK): fewer steps, points, seeds, masses and depths, with
#: every criterion the quick run has for what remains.
REDUCED = {
    "linear-maps": (
        linear_maps,
        {
            "eps": [0.25, 1.0],  # one mass below the reachable range of -I_3, one inside it
            "random_3x3": 0,
            "random_5x5": 0,
            "steps": 300,
            "lr": 0.5,
            "batch": 256,
            "floor_search": {"starts": 4, "steps": 100},
        },
    ),
    "crossing-1d": (
        crossing_1d,
        {
            "batch": 128,
            "restarts": 1,
            "phases": {"momentum": [[0.2, 250], [0.02, 50]], "ResNet": [[0.02, 50]]},
            "node": {"lr": 0.02, "steps": 10, "rtol": 1e-3},  # the NODE floor is a theorem at any step
        },
    ),
    "parity": (
        parity,
        {
            "lr": 0.05,
            "steps": 300,
            "node_steps": 10,
            "node_rtol": 1e-3,
            "dims": [3],
            "eps": [4.0],
            "linear_steps": 1500,
            "batch": 256,
        },
    ),
    "nested-rings": (
        nested_rings,
        {
            **nested_rings.QUICK,
            "test_per_ring": 250,
            "networks": {"momentum gamma=0.99": 0.99},  # the ResNet has no criterion
        },
    ),
    "spheres": (
        spheres,
        dict(dimensions=(2,), seeds=2, steps=40, lr=2e-2, train=256, test=512, tol=1e-2),
    ),
    "learning-to-optimize": (
        learning_to_optimize,
        dict(depths=(1, 4, 16), steps=20, lr=0.1, train=64, test=256),
    ),
    "discretizations": (discretizations, discretizations.QUICK),
    "depth-limit": (depth_limit, depth_limit.QUICK),
    "depth-sweep": (
        depth_sweep,
        {**depth_sweep.QUICK, "train_depths": (8,), "memory_depths": (20, 110)},
    ),
    "memory-depth": (memory_depth, None),  # filled in below: the workload comes from mode.bench
    "transformer-depth": (
        transformer_depth,
        {**transformer_depth.QUICK, "steps": 60, "validation_windows": 32},
    ),
    # ResNet-14 (one converted block per stage), one budget of 2 epochs: at depth 8 the drop of gamma 0.9
    # at conversion falls below its bound, after 1 epoch the fine-tuned gamma 0.9 is not yet within margin
    "convert-finetune": (
        convert_finetune,
        {**convert_finetune.QUICK, "depth": 14, "pretrain_epochs": 3, "budgets": (2,)},
    ),
    "second-order-family": (second_order_family, {**second_order_family.QUICK, "seeds": 1}),
}


def _tiny_memory_benchmark(monkeypatch):
    from mode.bench.workloads import Settings, Workload

    # Eager exact kernels in the benchmark's processes: the compiled ones agree bit for bit
    # (tests/exact/test_fusion.py), and compiling them anew in every fresh process took half the time.
    monkeypatch.setenv("MODE_COMPILE", "0")
    # The benchmark's own test workload: autograd's activations, 1.1 MB per layer, far above RSS noise;
    # one timed round and one memory process at a time.
    return {
        "workload": Workload("wide-mlp", "mlp", batch=512, dim=32, hidden=512),
        "depths": (2, 6),
        "settings": Settings(repeats=1, min_seconds=0.0, memory_workers=1),
    }


def _check_outputs(result: dict, folder) -> None:
    failed = {key: c for key, c in result["criteria"].items() if not c["passed"]}
    assert result["criteria"] and not failed, failed
    stored = json.loads((folder / "results.json").read_text())
    assert stored["passed"] and stored["settings"] and stored["metrics"]
    assert stored["environment"]["versions"]["torch"] and stored["wall_time_s"] > 0
    assert stored["figures"] and all((folder / name).stat().st_size > 10_000 for name in stored["figures"])
    assert not list(folder.glob(".*.tmp")), "outputs are written atomically"


def test_every_experiment_is_registered_in_report_order(capsys):
    assert tuple(load()) == NAMES
    assert main(["experiment", "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_criteria_hold_at_a_reduced_size(name, monkeypatch, tmp_path):
    module, reduced = REDUCED[name]
    if reduced is None:
        reduced = _tiny_memory_benchmark(monkeypatch)
    monkeypatch.setattr(module, "QUICK", reduced)
    result = run_experiment(name, quick=True, seed=0, out=tmp_path)
    _check_outputs(result, tmp_path / name)


def test_the_seed_decides_the_metrics(monkeypatch, tmp_path):
    tiny = {**REDUCED["linear-maps"][1], "eps": [1.0], "steps": 20, "floor_search": {"starts": 2, "steps": 5}}
    monkeypatch.setattr(linear_maps, "QUICK", tiny)

    def metrics(seed):
        return run_experiment("linear-maps", quick=True, seed=seed, out=tmp_path / str(seed))["metrics"]

    first = metrics(0)
    assert metrics(0) == first
    assert metrics(1)["-I_3: NODE loss"] != first["-I_3: NODE loss"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_quick_run_passes(name, tmp_path):
    result = run_experiment(name, quick=True, seed=0, out=tmp_path)
    _check_outputs(result, tmp_path / name)


CLI = "import sys; from mode.cli import main; sys.exit(main(sys.argv[1:]))"


def test_reproduce_quick_end_to_end(tmp_path):
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CLI, "reproduce", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    print(f"mode reproduce --quick: {seconds:.0f} s")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    report = (tmp_path / "report.md").read_text()
    for name in NAMES:
        stored = json.loads((tmp_path / name / "results.json").read_text())
        _check_outputs(stored, tmp_path / name)
        assert f"| [{name}](#{name}) | True |" in report
        assert all(f"![{fig}]({name}/{fig})" in report for fig in stored["figures"])
    assert seconds < 15 * 60


# ------------------------------------------------------------------------------------- unit checks


def test_concentric_spheres_radii_and_balance():
    x, y = spheres.concentric_spheres(1000, 3, torch.Generator().manual_seed(0))
    radius = x.norm(dim=1)
    assert (y == -1).sum() == (y == 1).sum() == 500
    assert radius[y < 0].max() <= spheres.INNER
    assert spheres.OUTER[0] <= radius[y > 0].min() and radius[y > 0].max() <= spheres.OUTER[1]


def test_volume_floor_matches_the_disc_in_two_dimensions():
    # n = 2: the uniform disc of area 2 pi sigma^2 has R^2 = 2 sigma^2 and second moment R^2 / 2 = sigma^2
    assert learning_to_optimize.volume_floor(2, sigma=3.0) == pytest.approx(9.0)
    # large n: (n/(n+2)) R^2 ~ n sigma^2 / e (Stirling)
    assert learning_to_optimize.volume_floor(2000) / (2000 / math.e) == pytest.approx(1.0, rel=5e-3)


@pytest.mark.parametrize("network", learning_to_optimize.INIT)
def test_unrolled_networks_have_the_minimizer_as_fixed_point(network):
    problems = learning_to_optimize.least_squares(4, torch.Generator().manual_seed(1))
    problems.x0, problems.v0 = problems.minimizer, torch.zeros_like(problems.v0)
    params = torch.tensor(learning_to_optimize.INIT[network], dtype=torch.float64).unsqueeze(1).repeat(1, 3)
    state, minimizer = learning_to_optimize.squared_distances(network, params, problems)
    assert state < 1e-20 and minimizer < 1e-20


def test_logistic_minimizer_zeroes_the_gradient():
    problems = learning_to_optimize.logistic_regression(8, torch.Generator().manual_seed(2))
    assert problems.gradient(problems.minimizer).abs().max() < 1e-12


def test_momentum_matrix_is_the_theory_map():
    A = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for eps in (0.25, 1.0, 4.0):
        expected = momentum_flow_matrix(A.numpy(), eps)
        assert np.allclose(linear_maps.momentum_matrix(A, eps).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_first_order_floor_is_attained_on_the_cone_for_diag_minus_one_minus_two():
    D = np.diag([-1.0, -2.0])
    assert linear_maps.first_order_floor(D) == pytest.approx(0.25)
    # diag(-1.5, -1.5) + 0.25 (sigma_z + J) has a double eigenvalue -1.5 and lies at distance^2 1/4; a
    # small rotation makes its eigenvalues a complex pair, so that it is a real exponential
    M = np.array([[-1.25, -0.25], [0.25, -1.75]]) + 1e-6 * np.array([[0.0, -1.0], [1.0, 0.0]])
    assert has_real_logarithm(M) and np.sum((M - D) ** 2) == pytest.approx(0.25, abs=1e-5)
    assert linear_maps.first_order_floor(-np.eye(3)) == pytest.approx(1.0)
    assert linear_maps.first_order_floor(np.diag([1.0, 2.0])) == 0.0


def test_digits_are_split_per_class_and_kept_at_their_size():
    x_train, y_train, x_test, y_test = digits(seed=0)
    assert x_train.shape[1:] == (1, 8, 8) and len(x_train) + len(x_test) == 1797
    assert 0.0 <= float(x_train.min()) and float(x_train.max()) <= 1.0
    per_class = torch.bincount(torch.cat([y_train, y_test]))
    assert torch.equal(torch.bincount(y_test), torch.round(0.2 * per_class).long())
    assert digits(size=16, channels=3)[0].shape[1:] == (3, 16, 16)


def test_digits_training_subset_is_drawn_per_class_and_leaves_the_test_set_whole():
    full = digits(test_fraction=0.25, seed=3)
    x_train, y_train, x_test, y_test = digits(test_fraction=0.25, seed=3, train_size=320)
    assert abs(len(y_train) - 320) <= 10  # rounded per class
    assert torch.equal(x_test, full[2]) and torch.equal(y_test, full[3])
    assert torch.bincount(y_train, minlength=10).min() >= 30  # every class keeps about its share
    # the subset is made of training images only
    rows = {tuple(row.flatten().tolist()) for row in full[0]}
    assert all(tuple(row.flatten().tolist()) in rows for row in x_train)


def test_cifar10_reads_a_local_copy_of_the_python_batches(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        cifar10(tmp_path)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    source, size, (x_train, y_train, x_test, y_test) = depth_sweep.load_data(
        Context(True, 0, tmp_path, tmp_path)
    )
    assert (source, size) == ("cifar10", 32)
    assert x_train.shape == (20, 3, 32, 32) and x_test.shape == (4, 3, 32, 32)
    assert float(x_train.max()) <= 1.0 and y_train.tolist() == [0, 1, 2, 3] * 5


def test_cifar_resnet_depths_and_momentum_conversion():
    with pytest.raises(ValueError, match="6n \\+ 2"):
        CifarResNet(10)
    x = torch.rand(2, 1, 8, 8)
    for depth in (8, 20):
        resnet = depth_sweep.build("resnet", depth, 1, seed=0).eval()
        momentum = depth_sweep.build("momentum", depth, 1, seed=0).eval()
        assert resnet.state_dict().keys() == momentum.state_dict().keys()
        assert resnet(x).shape == momentum(x).shape == (2, 10)
    converted = [m for m in momentum.modules() if isinstance(m, mode.nn.MomentumSequential)]
    assert [len(list(m.momentum.blocks)) for m in converted] == [3, 2, 2]  # n = 3: all but the first block
