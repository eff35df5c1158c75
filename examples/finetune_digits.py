r"""Convert a pretrained ResNet-18 to a Momentum ResNet and fine-tune it briefly with reversible backprop.

The recipe, in the three steps that :func:`main` runs on scikit-learn's digits:

1. **A pretrained ResNet.** ``torchvision.models.resnet18(num_classes=10)`` with its weights. No
   pretrained weights can be downloaded here, so by default the script makes its own checkpoint: it
   trains the ResNet-18 with autograd for ``--pretrain-epochs`` epochs and saves its ``state_dict`` to
   ``OUT/resnet18_digits.pt``. ``--checkpoint PATH`` loads a ``state_dict`` of
   ``resnet18(num_classes=10)`` instead and skips the pre-training: this is where real pretrained
   weights go (ImageNet's, with the head replaced by a 10-class ``nn.Linear`` before saving).
2. **Convert.** :func:`mode.to_momentum` with ``gamma=0.9, backprop="reversible"`` runs every
   shape-preserving residual block of a stage, :math:`x \mapsto x + f_i(x)`, as a momentum step

   .. math:: v_{i+1} = \gamma v_i + (1 - \gamma) f_i(x_i), \qquad x_{i+1} = x_i + v_{i+1}, \qquad v_0 = 0,

   with the same parameters and ``state_dict`` keys. For :math:`\gamma > 0` that is another function of
   the same weights, so the test accuracy drops right after the conversion; :math:`\gamma = 0` is the
   ResNet :math:`x_{i+1} = x_i + f_i(x_i)` itself, which the script checks as a sanity line
   (``gamma=0, backprop="autograd"``: the same accuracy, logits equal to rounding).
3. **Fine-tune.** The converted model trains ``--epochs`` epochs with reversible backprop, which stores
   no activations inside the converted stages and rebuilds them exactly in the backward pass. The
   baseline continues training the original ResNet-18 (autograd) for the same epochs with the same
   optimiser, learning-rate schedule and batches in the same order. Both start a fresh optimiser, as
   fine-tuning from a ``state_dict`` does.

Pre-training on the very task that is then fine-tuned is a gentler test than transfer from another data
set: the original has converged on the task already and continued training mostly keeps its accuracy,
while the converted model has to win back what the conversion cost.

Data: :func:`mode.datasets.digits`, the 1,797 8x8 grey images that ship with scikit-learn (no download),
scaled to [0, 1], upsampled bilinearly to 32x32 and replicated to 3 channels, with a seeded stratified
75/25 train/test split. Accuracies are those after the final epoch on the test split; the test split is
never used to pick an epoch.

Memory: the extra resident memory of one training step (forward, backward, AdamW step) of (a) the
ResNet-18, (b) its conversion with ``backprop="autograd"`` and (c) with ``backprop="reversible"``, each in a
fresh process: the peak resident set size (``VmHWM``; the high-water mark is reset through
``/proc/self/clear_refs`` first) minus the resident set size just before the step (``VmRSS``), read with
the helpers of :mod:`mode.bench.rss`. The models have the architecture of the fine-tuned ones at a seeded
random initialisation: the memory of a step depends on the shapes, not on the weights' values.
A warm-up step on two images first makes the parameter gradients and the optimiser state exist (they are
not zeroed to ``None``), so what the step adds is activations and transient buffers; the warm-up is tiny so
that per-batch state a model keeps between steps is charged to the step, not hidden in the baseline.
glibc's ``malloc`` is told to serve large blocks with ``mmap``, so that freed tensors go back to the
operating system and the resident set follows the live tensors. Each process measures two batch sizes:
the slope between them is the memory per image (activations, which grow with the batch), the intercept
what a step costs whatever the batch. Linux only; elsewhere (or with ``--skip-memory``) the memory part is
skipped.

ResNet-18 has two blocks per stage and :func:`mode.to_momentum` keeps each stage's shape-changing first
block as it is, so only 2 + 1 + 1 + 1 blocks run as momentum steps, against a fixed-size exact state that
the reversible recursion keeps per converted stage. The same measurement on ResNet-152 (ResNet-101 in
``--quick``), whose third stage runs 35 (22) blocks as momentum steps, shows how the picture changes with
depth.

Run ``python examples/finetune_digits.py --help`` for the options. ``--quick`` is a smoke run (320
training images, 2 + 2 epochs, small memory batches) of a minute or two on two CPU cores; the default run
takes a few minutes (see ``examples/README.md`` for measured times).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
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

IMAGE_SIZE = 32
CHECKPOINT_NAME = "resnet18_digits.pt"

SETTINGS = {
    "default": {
        "train_subset": None,
        "batch_size": 32,
        "weight_decay": 1e-4,
        "pretrain": {"epochs": 3, "lr": 3e-3},
        # a tenth of the pre-training peak: a fresh AdamW at 1e-3 knocked the converged original down to
        # 0.71 test accuracy after the first epoch (seed 0), where 3e-4 keeps it above 0.95
        "finetune": {"epochs": 2, "lr": 3e-4},
        # batch sizes of the memory measurement, two per model: the difference gives the memory per image
        "memory": {"resnet18": [32, 128], "resnet152": [8, 96]},
    },
    "quick": {
        "train_subset": 320,
        "batch_size": 16,
        "weight_decay": 1e-4,
        "pretrain": {"epochs": 2, "lr": 2e-3},
        "finetune": {"epochs": 2, "lr": 3e-4},
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
    """Adam with decoupled weight decay: robust without tuning for short runs."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits of ``model`` in eval mode (BatchNorm running statistics)."""
    model.eval()
    return torch.cat([model(x[s : s + batch_size]) for s in range(0, len(x), batch_size)])


def held_out_accuracy(model: torch.nn.Module, data: dict) -> float:
    """Fraction of the test images that ``model`` classifies correctly."""
    return (predict(model, data["x_test"]).argmax(1) == data["y_test"]).double().mean().item()


def train(
    model: torch.nn.Module,
    data: dict,
    phase: dict,
    batch_size: int,
    weight_decay: float,
    seed: int,
    name: str,
) -> dict:
    """Train ``model`` in place with a fresh optimiser and a seeded data order; return its history.

    The optimiser is AdamW; the learning rate follows a one-cycle schedule, 15 % warm-up from
    :math:`\\eta/25` to the peak :math:`\\eta`, then cosine decay to about zero, which ends every run at
    a settled point, so the final epoch is a fair one to compare. The test accuracy after each epoch is
    printed and recorded (a learning curve, not used to pick an epoch).

    Parameters
    ----------
    model : nn.Module
        The model, at its starting weights.
    data : dict
        As returned by :func:`load_digits_images`.
    phase : dict
        ``epochs`` and the peak learning rate ``lr``.
    batch_size : int
        Images per step; the last partial batch of an epoch is dropped (a batch of one image would break
        BatchNorm in training mode).
    weight_decay : float
        AdamW's decoupled weight decay.
    seed : int
        Seeds the shuffling generator, so that models trained with the same seed see the same batches in
        the same order.
    name : str
        Label for the progress bar and the per-epoch lines.

    Returns
    -------
    dict
        ``history`` (per epoch: mean train loss and accuracy over the epoch's batches, test accuracy),
        ``test_accuracy`` of the final model, ``train_seconds`` (training steps only), ``steps``,
        ``step_seconds`` (their median), ``first_step_seconds`` and ``eval_seconds``.
    """
    x, y = data["x_train"], data["y_train"]
    epochs = phase["epochs"]
    steps_per_epoch = len(y) // batch_size
    optimizer = make_optimizer(model, phase["lr"], weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=phase["lr"], total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    generator = torch.Generator().manual_seed(seed)
    history, step_seconds, eval_seconds = [], [], 0.0
    bar = tqdm(total=epochs * steps_per_epoch, desc=name, unit="step", dynamic_ncols=True, disable=None)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        loss_sum, correct, seen = 0.0, 0, 0
        for i in range(steps_per_epoch):
            start = time.perf_counter()
            batch = order[i * batch_size : (i + 1) * batch_size]
            logits = model(x[batch])
            loss = F.cross_entropy(logits, y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step_seconds.append(time.perf_counter() - start)
            loss_sum += loss.item() * len(batch)
            correct += (logits.argmax(1) == y[batch]).sum().item()
            seen += len(batch)
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        start = time.perf_counter()
        accuracy = held_out_accuracy(model, data)
        eval_seconds += time.perf_counter() - start
        bar.write(f"{name}: epoch {epoch + 1}/{epochs}, test accuracy {accuracy:.4f}")
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "test_accuracy": accuracy,
            }
        )
    bar.close()
    return {
        "history": history,
        "test_accuracy": history[-1]["test_accuracy"],
        "train_seconds": sum(step_seconds),
        "steps": len(step_seconds),
        # the median leaves out the first step, which for the reversible mode includes compiling its
        # kernels for the batch shape (several seconds, once)
        "step_seconds": statistics.median(step_seconds),
        "first_step_seconds": step_seconds[0],
        "eval_seconds": eval_seconds,
    }


# --------------------------------------------------------------------------- the three recipe steps


def pretrain(data: dict, settings: dict, seed: int) -> tuple[torch.nn.Module, dict]:
    """Step 1 without pretrained weights: train a seeded ``resnet18(num_classes=10)`` with autograd.

    Returns
    -------
    model : nn.Module
        The trained ResNet-18.
    run : dict
        Its history and timings, as returned by :func:`train`.
    """
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10)
    run = train(
        model, data, settings["pretrain"], settings["batch_size"], settings["weight_decay"], seed, "pre-train"
    )
    return model, run


def save_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    """Save ``model.state_dict()`` to ``path`` through a temporary file renamed into place, so that an
    interrupted run leaves no half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> torch.nn.Module:
    """Step 1 with pretrained weights: a ``resnet18(num_classes=10)`` holding the ``state_dict`` saved at
    ``path`` (loaded strictly: every key and shape must match)."""
    model = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


def convert(model: torch.nn.Module, gamma: float, data: dict) -> tuple[torch.nn.Module, dict]:
    """Step 2: the Momentum ResNet ``to_momentum(model, gamma, backprop="reversible")``, and what the
    conversion alone does to the test accuracy.

    Returns
    -------
    momentum : nn.Module
        The converted copy; ``model`` is left as it is.
    report : dict
        ``gamma``, ``gamma_effective`` (the exact :math:`n / 2^k` the network multiplies by),
        ``stages`` (blocks per stage and how many run as momentum steps), ``accuracy`` right after the
        conversion, and ``sanity``: the accuracy of the ``gamma=0, backprop="autograd"`` conversion,
        which computes the original function, and its largest absolute logit difference from the
        original.
    """
    momentum = mode.to_momentum(model, gamma=gamma, backprop="reversible")
    identity = mode.to_momentum(model, gamma=0.0, backprop="autograd")
    logits, identity_logits = predict(model, data["x_test"]), predict(identity, data["x_test"])
    stages = [getattr(momentum, f"layer{i}") for i in range(1, 5)]
    return momentum, {
        "gamma": gamma,
        "gamma_effective": stages[0].momentum.gamma_effective,
        "stages": [{"blocks": len(stage), "converted": stage.momentum.depth} for stage in stages],
        "accuracy": held_out_accuracy(momentum, data),
        "sanity": {
            "gamma": 0.0,
            "backprop": "autograd",
            "accuracy": (identity_logits.argmax(1) == data["y_test"]).double().mean().item(),
            "max_abs_logit_difference": (identity_logits - logits).abs().max().item(),
        },
    }


def fine_tune(
    momentum: torch.nn.Module, original: torch.nn.Module, data: dict, settings: dict, seed: int
) -> dict:
    """Step 3: fine-tune the converted model, and continue training the original as the baseline, both in
    place with the same optimiser, schedule and batches (one data-order seed, other than the
    pre-training's).

    Returns
    -------
    dict
        ``momentum`` and ``resnet18``: each run as returned by :func:`train`.
    """
    kwargs = {
        "phase": settings["finetune"],
        "batch_size": settings["batch_size"],
        "weight_decay": settings["weight_decay"],
        "seed": seed + 1,
    }
    return {
        "momentum": train(momentum, data, name="fine-tune momentum", **kwargs),
        "resnet18": train(original, data, name="continue resnet18", **kwargs),
    }


def compare(momentum: torch.nn.Module, original: torch.nn.Module, data: dict) -> dict:
    """The final test accuracies of the two fine-tuned models and their gap.

    Returns
    -------
    dict
        ``momentum_finetuned``, ``resnet18_continued``, ``gap`` (momentum minus original), ``gap_images``,
        ``gap_standard_error`` and ``disagreements`` (test images the two classify differently). The
        standard error is that of a difference of two independent accuracies on :math:`n` images,
        :math:`\\sqrt{2 p (1 - p) / n}` with :math:`p` their mean: a yardstick only, since the runs share
        data and weights, so the true spread of the gap is smaller.
    """
    pred_momentum = predict(momentum, data["x_test"]).argmax(1)
    pred_original = predict(original, data["x_test"]).argmax(1)
    n_test = len(data["y_test"])
    acc_momentum = (pred_momentum == data["y_test"]).double().mean().item()
    acc_original = (pred_original == data["y_test"]).double().mean().item()
    gap = acc_momentum - acc_original
    p = (acc_momentum + acc_original) / 2
    return {
        "momentum_finetuned": acc_momentum,
        "resnet18_continued": acc_original,
        "gap": gap,
        "gap_images": round(gap * n_test),
        "gap_standard_error": math.sqrt(2 * p * (1 - p) / n_test),
        "disagreements": int((pred_momentum != pred_original).sum()),
    }


# ------------------------------------------------------------------------------------------- memory


def _build(arch: str, variant: str, gamma: float, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(num_classes=10)
    if variant == "plain":
        return model
    return mode.to_momentum(model, gamma=gamma, backprop=variant)


def memory_probe(arch: str, variant: str, batches: list[int], gamma: float, seed: int) -> dict:
    """Peak extra resident memory of one training step per batch size; run it alone in a fresh process.

    Parameters
    ----------
    arch : str
        A ``torchvision.models`` ResNet constructor name.
    variant : {"plain", "autograd", "reversible"}
        The unconverted model, or its conversion with that ``backprop``.
    batches : list of int
        Batch sizes of the measured steps (3x32x32 inputs), measured in this order, smallest first.
    gamma : float
        Momentum of the conversion.
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
    model = _build(arch, variant, gamma, seed)
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


def measure_in_fresh_process(
    arch: str, variant: str, batches: list[int], gamma: float, seed: int, threads: int
) -> dict:
    """Run :func:`memory_probe` in a new interpreter so no earlier allocation shapes the measurement."""
    command = [sys.executable, os.path.abspath(__file__), "--memory-probe", arch, variant]
    command += [",".join(map(str, batches)), "--gamma", repr(gamma), "--seed", str(seed)]
    command += ["--threads", str(threads)]
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


def measure_memory(plan: dict[str, list[int]], gamma: float, seed: int, jobs: int) -> dict:
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
    with (
        tqdm(total=len(tasks), desc="memory", unit="process", disable=None) as bar,
        ThreadPoolExecutor(jobs) as pool,
    ):
        futures = {
            task: pool.submit(measure_in_fresh_process, *task, sorted(plan[task[0]]), gamma, seed, threads)
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
    """The printed report: the three steps' accuracies, step times, memory table and what it says."""
    acc, data, settings = results["accuracy"], results["data"], results["settings"]
    conversion, runs = results["conversion"], results["runs"]
    checkpoint = results["checkpoint"]
    if runs["pretrain"] is None:
        step1 = f"loaded from {checkpoint['path']}"
    else:
        step1 = (
            f"pre-trained here with autograd, {settings['pretrain']['epochs']} epochs, saved to "
            f"{checkpoint['path']}"
        )
    sanity = conversion["sanity"]
    epochs = settings["finetune"]["epochs"]
    lines = [
        f"digits: {data['n_train']} train / {data['n_test']} test images at {IMAGE_SIZE}x{IMAGE_SIZE}, "
        f"seed {results['seed']}",
        "",
        f"1. ResNet-18 ({step1}): test accuracy {acc['pretrained']:.4f}",
        f"2. to_momentum(gamma={conversion['gamma']:g}, backprop='reversible'): test accuracy "
        f"{acc['after_conversion']:.4f} right after the conversion",
        f"   sanity: to_momentum(gamma=0, backprop='autograd') {sanity['accuracy']:.4f}, largest logit "
        f"difference from the original {sanity['max_abs_logit_difference']:.1e}",
        f"3. fine-tuned {epochs} epochs (AdamW, one-cycle, peak lr {settings['finetune']['lr']:g}, same "
        "batches for both); test accuracy after each epoch:",
        "",
        f"{'model':32s} "
        + " ".join(f"{'epoch ' + str(e + 1):>8s}" for e in range(epochs))
        + f" {'train s':>8s} {'s/step':>7s} {'1st step':>8s}",
    ]
    for key, label in (
        ("momentum", "momentum (reversible), fine-tuned"),
        ("resnet18", "ResNet-18, continued"),
    ):
        run = runs[key]
        curve = " ".join(f"{h['test_accuracy']:8.4f}" for h in run["history"])
        lines.append(
            f"{label:32s} {curve} {run['train_seconds']:8.1f} {run['step_seconds']:7.3f} "
            f"{run['first_step_seconds']:8.1f}"
        )
    lines.append(
        f"gap (momentum - continued): {100 * acc['gap']:+.2f} points = {acc['gap_images']:+d} images "
        f"(s.e. of a difference of two accuracies: {100 * acc['gap_standard_error']:.2f} points); "
        f"the two disagree on {acc['disagreements']} of {data['n_test']} test images"
    )
    memory, wall = results["memory"], results["wall_seconds"]
    if memory:
        lines += [
            "",
            "extra memory of one training step over weights, gradients and optimiser state (MB, peak RSS,",
            "fresh process per row); 'per image' is the slope between the two batch sizes:",
            f"{'model':10s} {'variant':11s} {'converted':>16s} {'batch':>11s} {'MB':>15s} {'per image':>10s}",
        ]
        for arch, comp in memory.items():
            small, large = comp["batches"]
            stages = " ".join(f"{s['converted']}/{s['blocks']}" for s in comp["stages"])
            for variant, r in comp["variants"].items():
                converted = "-" if variant == "plain" else stages
                lines.append(
                    f"{arch:10s} {variant:11s} {converted:>16s} {small:>5d},{large:<5d} "
                    f"{r['activation_mb'][small]:7.1f},{r['activation_mb'][large]:7.1f} "
                    f"{r['per_image_mb']:10.3f}"
                )
        lines.append("")
        for arch, comp in memory.items():
            large = comp["batches"][1]
            saved = comp["saved_vs_autograd_mb"]
            lines.append(
                f"{arch}: reversible {'saves' if saved > 0 else 'costs'} {abs(saved):.1f} MB vs autograd "
                f"at batch {large} (ratio {comp['reversible_over_autograd']:.2f}); per image ratio "
                f"{comp['per_image_reversible_over_autograd']:.2f}"
            )
        lines += [
            "ResNet-18 has 2 blocks per stage and to_momentum keeps each stage's shape-changing block, so",
            "only 2+1+1+1 blocks run as momentum steps: the reversible mode has few activations to drop,",
            "against what it keeps per converted stage while the stage's output lives: the exact int64",
            "state x, v and the bit stack's live word, 24 bytes per coordinate, about what autograd saves",
            "for one BasicBlock (five float32 tensors). Deeper stages drop many blocks' activations against",
            "that one state.",
        ]
    else:
        lines += ["", "memory: not measured (--skip-memory, or no Linux /proc)"]
    pretrain_seconds = "" if runs["pretrain"] is None else f"pre-training {wall['pretrain']:.0f} s, "
    lines += [
        "",
        f"wall time: {pretrain_seconds}fine-tuning {wall['finetune_momentum']:.0f} s (momentum) + "
        f"{wall['finetune_resnet18']:.0f} s (ResNet-18), memory {wall['memory']:.0f} s, total "
        f"{wall['total']:.0f} s; {results['environment']['torch_threads']} torch threads, load average "
        f"{results['load_average']['start'][0]:.1f} at start, {results['load_average']['end'][0]:.1f} at end",
    ]
    return "\n".join(lines)


def collect(
    args: argparse.Namespace,
    settings: dict,
    data: dict,
    *,
    checkpoint: Path,
    pretraining: dict | None,
    pretrained_accuracy: float,
    conversion: dict,
    runs: dict,
    accuracy: dict,
    memory: dict,
    memory_seconds: float,
    started: tuple[float, tuple[float, float, float]],
) -> dict:
    """Everything that goes into ``results.json``: settings, versions, load average, the three steps'
    accuracies and histories, the memory measurement and wall times; ``started`` is the
    ``time.perf_counter()`` and load average at the start of the run."""
    t0, load_start = started
    wall = {
        # training steps and the evaluations after each epoch
        name: run["train_seconds"] + run["eval_seconds"] if run else 0.0
        for name, run in (
            ("pretrain", pretraining),
            ("finetune_momentum", runs["momentum"]),
            ("finetune_resnet18", runs["resnet18"]),
        )
    }
    return {
        "description": (
            "A ResNet-18 pre-trained on sklearn digits (upsampled to 32x32) converted with to_momentum "
            "(reversible backprop) and fine-tuned, against the original trained on for the same epochs; "
            "extra memory of one training step measured in fresh processes"
        ),
        "quick": args.quick,
        "seed": args.seed,
        "settings": settings,
        "environment": environment(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "data": {"n_train": len(data["y_train"]), "n_test": len(data["y_test"])},
        "checkpoint": {"path": str(checkpoint), "pretrained_here": pretraining is not None},
        "conversion": conversion,
        "accuracy": {
            "pretrained": pretrained_accuracy,
            "after_conversion": conversion["accuracy"],
            **accuracy,
        },
        "runs": {"pretrain": pretraining, **runs},
        "memory": memory,
        "memory_method": (
            "one fresh process per model variant; warm-up training step on 2 images (parameter gradients "
            "and AdamW state exist afterwards, zero_grad keeps them), then per batch size: reset the peak "
            "RSS via /proc/self/clear_refs, one training step (forward, backward, AdamW step), "
            "VmHWM minus VmRSS before the step; " + " ".join(f"{k}={v}" for k, v in MALLOC_ENV.items())
        ),
        "wall_seconds": {**wall, "memory": memory_seconds, "total": time.perf_counter() - t0},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="state_dict of resnet18(num_classes=10) to start from, instead of pre-training one here",
    )
    parser.add_argument(
        "--pretrain-epochs", type=int, default=None, help="pre-training epochs (default 3, quick 2)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default 2, quick 2)")
    parser.add_argument("--gamma", type=float, default=0.9, help="momentum of the conversion (default 0.9)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the init and the data order")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/finetune_digits"),
        help=f"folder for results.json and the pre-trained {CHECKPOINT_NAME}",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: data subset, fewer epochs")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory measurement")
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


def settings_for(args: argparse.Namespace) -> dict:
    """The settings of ``--quick`` or the default run, with the epochs given on the command line."""
    preset = SETTINGS["quick" if args.quick else "default"]
    settings = {**preset, "pretrain": dict(preset["pretrain"]), "finetune": dict(preset["finetune"])}
    if args.pretrain_epochs is not None:
        settings["pretrain"]["epochs"] = args.pretrain_epochs
    if args.epochs is not None:
        settings["finetune"]["epochs"] = args.epochs
    return {
        **settings,
        "optimizer": "AdamW, one-cycle cosine learning-rate schedule, fresh for each training",
        "gamma": args.gamma,
        "image_size": IMAGE_SIZE,
        "test_size": 0.25,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the recipe (pre-train or load, convert, fine-tune), measure a step's memory, write the results."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        arch, variant, batches = args.memory_probe
        batches = [int(b) for b in batches.split(",")]
        print(json.dumps(memory_probe(arch, variant, batches, args.gamma, args.seed)))
        return 0
    settings = settings_for(args)
    t0, load_start = time.perf_counter(), os.getloadavg()
    data = load_digits_images(args.seed, settings["train_subset"])

    # 1. a pretrained ResNet-18: the given checkpoint, or one trained and saved here
    if args.checkpoint is None:
        resnet, pretraining = pretrain(data, settings, args.seed)
        checkpoint = save_checkpoint(resnet, args.out / CHECKPOINT_NAME)
    else:
        resnet, pretraining, checkpoint = load_checkpoint(args.checkpoint), None, args.checkpoint
    pretrained_accuracy = held_out_accuracy(resnet, data)

    # 2. its Momentum ResNet: the same weights, run as momentum steps, trained with reversible backprop
    momentum, conversion = convert(resnet, args.gamma, data)

    # 3. fine-tune the converted model; the baseline continues training the original (in place: the
    #    conversion is a copy)
    runs = fine_tune(momentum, resnet, data, settings, args.seed)
    accuracy = compare(momentum, resnet, data)

    # what a training step costs in memory, each model in a fresh process
    t_memory = time.perf_counter()
    memory = {}
    if sys.platform.startswith("linux") and not args.skip_memory:
        memory = measure_memory(settings["memory"], args.gamma, args.seed, jobs=min(2, os.cpu_count() or 1))
    memory_seconds = time.perf_counter() - t_memory

    results = collect(
        args,
        settings,
        data,
        checkpoint=checkpoint,
        pretraining=pretraining,
        pretrained_accuracy=pretrained_accuracy,
        conversion=conversion,
        runs=runs,
        accuracy=accuracy,
        memory=memory,
        memory_seconds=memory_seconds,
        started=(t0, load_start),
    )
    write_json(args.out / "results.json", results)
    print(summary(results))
    print(f"\nwrote {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
