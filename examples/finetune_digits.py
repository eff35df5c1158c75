"""Train a ResNet-18 and its Momentum ResNet conversion (reversible backprop) on scikit-learn's digits.

The target: a converted ResNet-18 *fine-tuned* with reversible backprop to accuracy on par with the
unconverted model, with the memory saved reported. No pretrained weights can be downloaded here, and
"pre-training" briefly on the very data set we then fine-tune on would make the comparison look better
than it is (both models would start from a solution). So this script uses the stricter framing:

* both models start from **the same random initialisation** (one ``torchvision.models.resnet18`` and its
  :func:`mode.to_momentum` copy, which has the same parameters and ``state_dict`` keys) and are trained
  from scratch with the same seed, data order, optimiser, learning-rate schedule and number of epochs;
* the unconverted model uses ordinary autograd, the converted one ``gamma=0.9, backprop="reversible"``,
  which stores no activations inside the converted stages and rebuilds them exactly in the backward pass.

With real pretrained weights, the same code fine-tunes: load them into the ResNet before converting.

Data: :func:`mode.datasets.digits`, the 1,797 8x8 grey images that ship with scikit-learn (no download),
scaled to [0, 1], upsampled bilinearly to 32x32 and replicated to 3 channels, with a seeded stratified
75/25 train/test split. Accuracies are those of the final epoch on the test split; the test split is never
used to pick an epoch.

Memory: the extra resident memory of one training step (forward, backward, AdamW step) of (a) the
ResNet-18, (b) its conversion with ``backprop="autograd"`` and (c) with ``backprop="reversible"``, each in a
fresh process: the peak resident set size (``VmHWM``; the high-water mark is reset through
``/proc/self/clear_refs`` first) minus the resident set size just before the step (``VmRSS``), read with
the helpers of :mod:`mode.bench.rss`.
A warm-up step on two images first makes the parameter gradients and the optimiser state exist (they are
not zeroed to ``None``), so what the step adds is activations and transient buffers; the warm-up is tiny so
that per-batch state a model keeps between steps is charged to the step, not hidden in the baseline.
glibc's ``malloc`` is told to serve large blocks with ``mmap``, so that freed tensors go back to the
operating system and the resident set follows the live tensors. Each process measures two batch sizes:
the slope between them is the memory per image (activations, which grow with the batch), the intercept
what a step costs whatever the batch. Linux only; elsewhere the memory part is skipped.

ResNet-18 has two blocks per stage and :func:`mode.to_momentum` keeps each stage's shape-changing first
block as it is, so only 2 + 1 + 1 + 1 blocks run as momentum steps, against a fixed-size exact state that
the reversible recursion keeps per converted stage. The same measurement on ResNet-152 (ResNet-101 in
``--quick``), whose third stage runs 35 (22) blocks as momentum steps, shows how the picture changes with
depth.

Run ``python examples/finetune_digits.py --help`` for the options. ``--quick`` is a smoke run (320
training images, 2 epochs, small memory batches) of a minute or two on two CPU cores; the default run
takes several minutes (see ``examples/README.md`` for measured times).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from tqdm import tqdm

import mode
from mode.bench.rss import MALLOC_ENV, reset_peak, status_bytes
from mode.datasets import digits
from mode.records import environment, write_json

#: Large blocks served by mmap are unmapped on free, so the resident set tracks live tensors; with glibc's
#: default, adaptive threshold freed activations stay in malloc's heap and a step's peak is invisible.

GAMMA = 0.9
IMAGE_SIZE = 32

SETTINGS = {
    "default": {
        "epochs": 3,
        "train_subset": None,
        "batch_size": 32,
        "lr": 3e-3,
        "weight_decay": 1e-4,
        # batch sizes of the memory measurement, two per model: the difference gives the memory per image
        "memory": {"resnet18": [32, 128], "resnet152": [8, 96]},
    },
    "quick": {
        "epochs": 2,
        "train_subset": 320,
        "batch_size": 16,
        "lr": 2e-3,
        "weight_decay": 1e-4,
        "memory": {"resnet18": [16, 64], "resnet101": [4, 12]},
    },
}


# --------------------------------------------------------------------------------------------- data


def load_digits_images(seed: int, train_subset: int | None = None) -> dict:
    """The digits as 3 x 32 x 32 images in [0, 1] (:func:`mode.datasets.digits`), a quarter of each class
    held out for testing; ``train_subset`` keeps about that many training images."""
    x_train, y_train, x_test, y_test = digits(
        IMAGE_SIZE, 3, test_fraction=0.25, seed=seed, train_size=train_subset
    )
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


# ----------------------------------------------------------------------------------------- training


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay: robust without tuning for a short run from scratch."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted classes of ``model`` in eval mode (BatchNorm running statistics)."""
    model.eval()
    return torch.cat([model(x[s : s + batch_size]).argmax(1) for s in range(0, len(x), batch_size)])


def train(model: torch.nn.Module, data: dict, settings: dict, seed: int, name: str, eval_every_epoch: bool):
    """Train ``model`` in place with a seeded data order; return its history and timings.

    Parameters
    ----------
    model : nn.Module
        The model, already at its initial weights.
    data : dict
        As returned by :func:`load_digits_images`.
    settings : dict
        ``epochs``, ``batch_size``, ``lr`` and ``weight_decay``.
    seed : int
        Seeds the shuffling generator, so that every model sees the same batches in the same order.
    name : str
        Label for the progress bar.
    eval_every_epoch : bool
        Also record the test accuracy after every epoch (a learning curve, not used to pick an epoch).

    Returns
    -------
    dict
        ``history`` (per epoch: mean train loss and accuracy over the epoch's batches, test accuracy or
        None), ``test_accuracy``
        of the final model, ``train_seconds`` (training steps only) and ``eval_seconds``.
    """
    x, y = data["x_train"], data["y_train"]
    epochs, batch_size = settings["epochs"], settings["batch_size"]
    # the last partial batch is dropped: a batch of one image would break BatchNorm in training mode
    steps_per_epoch = len(y) // batch_size
    optimizer = make_optimizer(model, settings["lr"], settings["weight_decay"])
    # cosine decay to zero ends every run at a settled point, so the final epoch is a fair one to compare
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings["lr"], total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    generator = torch.Generator().manual_seed(seed)
    history, train_seconds, eval_seconds = [], 0.0, 0.0
    bar = tqdm(total=epochs * steps_per_epoch, desc=f"train {name}", unit="step", dynamic_ncols=True)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        loss_sum, correct, seen = 0.0, 0, 0
        start = time.perf_counter()
        for i in range(steps_per_epoch):
            batch = order[i * batch_size : (i + 1) * batch_size]
            logits = model(x[batch])
            loss = F.cross_entropy(logits, y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(batch)
            correct += (logits.argmax(1) == y[batch]).sum().item()
            seen += len(batch)
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        train_seconds += time.perf_counter() - start
        test_accuracy = None
        if eval_every_epoch or epoch == epochs - 1:
            start = time.perf_counter()
            test_accuracy = (predict(model, data["x_test"]) == data["y_test"]).double().mean().item()
            eval_seconds += time.perf_counter() - start
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "test_accuracy": test_accuracy,
            }
        )
    bar.close()
    return {
        "history": history,
        "test_accuracy": history[-1]["test_accuracy"],
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
    }


# ------------------------------------------------------------------------------------------- memory


def _build(arch: str, variant: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(num_classes=10)
    if variant == "plain":
        return model
    return mode.to_momentum(model, gamma=GAMMA, backprop=variant)


def memory_probe(arch: str, variant: str, batches: list[int], seed: int) -> dict:
    """Peak extra resident memory of one training step per batch size; run it alone in a fresh process.

    Parameters
    ----------
    arch : str
        A ``torchvision.models`` ResNet constructor name.
    variant : {"plain", "autograd", "reversible"}
        The unconverted model, or its conversion with that ``backprop``.
    batches : list of int
        Batch sizes of the measured steps (3x32x32 inputs), measured in this order, smallest first.
    seed : int
        Seed of the initial weights and the inputs.

    Returns
    -------
    dict
        ``activation_mb`` (per batch size: peak RSS during the step minus RSS before it),
        ``step_seconds`` (per batch size), ``rss_before_mb``, ``peak_reset`` (whether the high-water
        mark could be reset before each step) and, for converted models, ``stages`` (blocks per stage and
        how many of them run as momentum steps).
    """
    model = _build(arch, variant, seed)
    model.train()
    optimizer = make_optimizer(model, 1e-3, 1e-4)
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(max(batches), 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    y = torch.randint(0, 10, (max(batches),), generator=generator)

    def step(n):
        optimizer.zero_grad(set_to_none=False)  # keep the gradient buffers: they are not activations
        F.cross_entropy(model(x[:n]), y[:n]).backward()
        optimizer.step()

    # The warm-up allocates the parameter gradients and the optimiser state. It runs on two images, not a
    # full batch: per-batch state that a model kept between steps would otherwise be counted in the
    # baseline, not the step.
    step(2)
    # The reversible mode compiles its kernels once per input shape: a forward and backward at every
    # measured batch size first, so that the measured steps neither compile nor count the compiler.
    for batch in batches:
        F.cross_entropy(model(x[:batch]), y[:batch]).backward()
    optimizer.zero_grad(set_to_none=False)
    out = {"activation_mb": {}, "step_seconds": {}, "peak_reset": True}
    for batch in sorted(batches):
        out["peak_reset"] &= reset_peak()
        before = status_bytes("VmRSS")
        start = time.perf_counter()
        step(batch)
        out["step_seconds"][batch] = time.perf_counter() - start
        peak = status_bytes("VmHWM")
        out["activation_mb"][batch] = (peak - before) / 2**20
        out.setdefault("rss_before_mb", before / 2**20)
    if variant != "plain":
        out["stages"] = [
            {"blocks": len(stage), "converted": stage.momentum.depth}
            for stage in (getattr(model, f"layer{i}") for i in range(1, 5))
        ]
    return out


def measure_in_fresh_process(arch: str, variant: str, batches: list[int], seed: int, threads: int) -> dict:
    """Run :func:`memory_probe` in a new interpreter so no earlier allocation shapes the measurement."""
    command = [sys.executable, os.path.abspath(__file__), "--memory-probe", arch, variant]
    command += [",".join(map(str, batches)), "--seed", str(seed), "--threads", str(threads)]
    start = time.perf_counter()
    done = subprocess.run(
        command, env=dict(os.environ, **MALLOC_ENV), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {arch}/{variant} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # JSON keys are strings; the batch sizes read back as ints
    for key in ("activation_mb", "step_seconds"):
        result[key] = {int(b): v for b, v in result[key].items()}
    result["process_seconds"] = time.perf_counter() - start
    return result


def measure_memory(plan: dict[str, list[int]], seed: int, jobs: int) -> dict:
    """Measure every variant of every model in ``plan`` (model -> two batch sizes) and compare them.

    Each measurement is a fresh process; ``jobs`` of them run at once, which leaves each process's own
    peak resident set unchanged (only their step times share the CPU). Besides the peak at each batch
    size, the slope between the two batch sizes gives the memory per image (what grows with the batch:
    activations), apart from what a step needs whatever the batch (the intercept, e.g. gradient buffers a
    backward holds before accumulating them).
    """
    tasks = [
        (arch, variant)
        for arch in plan
        for variant in (
            ("plain", "autograd", "reversible") if arch == "resnet18" else ("autograd", "reversible")
        )
    ]
    threads = max(1, torch.get_num_threads() // jobs)
    with tqdm(total=len(tasks), desc="memory", unit="process") as bar, ThreadPoolExecutor(jobs) as pool:
        futures = {
            task: pool.submit(measure_in_fresh_process, *task, sorted(plan[task[0]]), seed, threads)
            for task in tasks
        }
        for future in futures.values():
            future.add_done_callback(lambda _: bar.update())
        measured = {task: future.result() for task, future in futures.items()}

    out = {}
    for arch, batches in plan.items():
        small, large = sorted(batches)
        comp = out[arch] = {"batches": [small, large], "threads_per_process": threads, "variants": {}}
        for (name, variant), result in measured.items():
            if name != arch:
                continue
            mb = result["activation_mb"]
            result["per_image_mb"] = (mb[large] - mb[small]) / (large - small)
            result["intercept_mb"] = mb[small] - small * result["per_image_mb"]
            comp["variants"][variant] = result
        rev, auto = comp["variants"]["reversible"], comp["variants"]["autograd"]
        comp["reversible_over_autograd"] = rev["activation_mb"][large] / auto["activation_mb"][large]
        comp["saved_vs_autograd_mb"] = auto["activation_mb"][large] - rev["activation_mb"][large]
        comp["per_image_reversible_over_autograd"] = rev["per_image_mb"] / auto["per_image_mb"]
        comp["stages"] = rev["stages"]
    return out


# ------------------------------------------------------------------------------------------ results


def summary(results: dict) -> str:
    """The printed report: accuracies, memory table and what the memory numbers say."""
    acc, data = results["accuracy"], results["data"]
    lines = [
        f"digits: {data['n_train']} train / {data['n_test']} test images at {IMAGE_SIZE}x{IMAGE_SIZE}, "
        f"{results['settings']['epochs']} epochs, seed {results['seed']}",
        "both models trained from the same random init (no pretrained weights offline: not fine-tuning)",
        "",
        f"{'model':34s} {'test acc':>9s} {'train s':>8s}",
    ]
    for key, label in (
        ("resnet18", "ResNet-18 (autograd)"),
        ("momentum", "to_momentum(gamma=0.9, reversible)"),
    ):
        run = results["runs"][key]
        lines.append(f"{label:34s} {run['test_accuracy']:9.4f} {run['train_seconds']:8.1f}")
    lines.append(
        f"gap (momentum - plain): {100 * acc['gap']:+.2f} points = {acc['gap_images']:+d} images "
        f"(s.e. of a difference of two accuracies: {100 * acc['gap_standard_error']:.2f} points); "
        f"the two disagree on {acc['disagreements']} of {data['n_test']} test images"
    )
    memory, wall = results["memory"], results["wall_seconds"]
    if not memory:
        return "\n".join([*lines, "", "memory: not measured (needs Linux /proc)"])
    lines += [
        "",
        "extra memory of one training step over weights, gradients and optimiser state (MB, peak RSS, fresh",
        "process per row); 'per image' is the slope between the two batch sizes:",
        f"{'model':10s} {'variant':11s} {'converted':>16s} {'batch':>11s} {'MB':>15s} {'per image':>10s}",
    ]
    for arch, comp in memory.items():
        small, large = comp["batches"]
        stages = " ".join(f"{s['converted']}/{s['blocks']}" for s in comp["stages"])
        for variant, r in comp["variants"].items():
            converted = "-" if variant == "plain" else stages
            lines.append(
                f"{arch:10s} {variant:11s} {converted:>16s} {small:>5d},{large:<5d} "
                f"{r['activation_mb'][small]:7.1f},{r['activation_mb'][large]:7.1f} {r['per_image_mb']:10.3f}"
            )
    lines.append("")
    for arch, comp in memory.items():
        large = comp["batches"][1]
        saved = comp["saved_vs_autograd_mb"]
        lines.append(
            f"{arch}: reversible {'saves' if saved > 0 else 'costs'} {abs(saved):.1f} MB vs autograd "
            f"at batch {large} "
            f"(ratio {comp['reversible_over_autograd']:.2f}); per image ratio "
            f"{comp['per_image_reversible_over_autograd']:.2f}"
        )
    lines += [
        "ResNet-18 has 2 blocks per stage and to_momentum keeps each stage's shape-changing block, so only",
        "2+1+1+1 blocks run as momentum steps: the reversible mode has few activations to drop, against what",
        "it keeps per converted stage while the stage's output lives: the exact int64 state x, v and the",
        "bit stack's live word, 24 bytes per coordinate, about what autograd saves for one BasicBlock (five",
        "float32 tensors). Deeper stages drop many blocks' activations against that one state.",
        "",
        f"wall time: memory {wall['memory']:.0f} s, training {wall['train_resnet18']:.0f} s (ResNet-18) + "
        f"{wall['train_momentum']:.0f} s (momentum), total {wall['total']:.0f} s; "
        f"{results['environment']['torch_threads']} torch threads, load average "
        f"{results['load_average']['start'][0]:.1f} at start",
    ]
    return "\n".join(lines)


def run(args) -> dict:
    """Measure memory, train both models, and collect everything that goes into ``results.json``."""
    settings = dict(SETTINGS["quick" if args.quick else "default"])
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    t0 = time.perf_counter()
    load_start = os.getloadavg()

    # memory first, while this process is small: a child's ru_maxrss starts from what it inherits at exec
    memory = {}
    if sys.platform.startswith("linux"):
        memory = measure_memory(settings["memory"], args.seed, jobs=min(2, os.cpu_count() or 1))
    t_memory = time.perf_counter() - t0

    data = load_digits_images(args.seed, settings["train_subset"])
    torch.manual_seed(args.seed)
    plain = torchvision.models.resnet18(num_classes=10)
    converted = mode.to_momentum(plain, gamma=GAMMA, backprop="reversible")  # a copy with the same weights
    for a, b in zip(plain.state_dict().values(), converted.state_dict().values(), strict=True):
        if not torch.equal(a, b):
            raise RuntimeError("the converted model does not start from the plain model's weights")
    runs = {}
    for key, model in (("resnet18", plain), ("momentum", converted)):
        runs[key] = train(model, data, settings, args.seed, key, eval_every_epoch=not args.quick)
    pred_plain, pred_momentum = predict(plain, data["x_test"]), predict(converted, data["x_test"])

    n_test = len(data["y_test"])
    acc_plain, acc_momentum = runs["resnet18"]["test_accuracy"], runs["momentum"]["test_accuracy"]
    gap = acc_momentum - acc_plain
    p = (acc_plain + acc_momentum) / 2
    return {
        "description": (
            "ResNet-18 vs its to_momentum conversion (gamma=0.9, reversible backprop) trained from the same "
            "random initialisation on sklearn digits upsampled to 32x32; extra memory of one training step "
            "measured in fresh processes"
        ),
        "framing": (
            "No pretrained weights are available offline, so instead of fine-tuning pretrained weights both "
            "models are trained from scratch from one shared random init (the stricter test of parity)."
        ),
        "quick": args.quick,
        "seed": args.seed,
        "settings": {
            **settings,
            "optimizer": "AdamW, one-cycle cosine learning-rate schedule",
            "gamma": GAMMA,
            "image_size": IMAGE_SIZE,
            "test_size": 0.25,
        },
        "environment": environment(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "data": {"n_train": len(data["y_train"]), "n_test": n_test},
        "accuracy": {
            "resnet18": acc_plain,
            "momentum_reversible": acc_momentum,
            "gap": gap,
            "gap_images": round(gap * n_test),
            # a yardstick only: the runs share data and init, so the true spread of the gap is smaller
            "gap_standard_error": math.sqrt(2 * p * (1 - p) / n_test),
            "disagreements": int((pred_plain != pred_momentum).sum()),
        },
        "runs": runs,
        "memory": memory,
        "memory_method": (
            "one fresh process per model variant; warm-up training step on 2 images (parameter gradients "
            "and AdamW state exist afterwards, zero_grad keeps them), then per batch size: reset the peak "
            "RSS via /proc/self/clear_refs, one training step (forward, backward, AdamW step), "
            "VmHWM minus VmRSS before the step; " + " ".join(f"{k}={v}" for k, v in MALLOC_ENV.items())
        ),
        "wall_seconds": {
            "memory": t_memory,
            "train_resnet18": runs["resnet18"]["train_seconds"],
            "train_momentum": runs["momentum"]["train_seconds"],
            "total": time.perf_counter() - t0,
        },
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 3, quick 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the init and the data order")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/finetune_digits"), help="folder for results.json"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: data subset, fewer epochs")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice; 1 is faster on a machine others are loading)",
    )
    # internal: one memory measurement, run by measure_in_fresh_process
    parser.add_argument(
        "--memory-probe", nargs=3, metavar=("ARCH", "VARIANT", "BATCHES"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        arch, variant, batches = args.memory_probe
        print(json.dumps(memory_probe(arch, variant, [int(b) for b in batches.split(",")], args.seed)))
        return 0
    results = run(args)
    write_json(args.out / "results.json", results)
    print(summary(results))
    print(f"\nwrote {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
