r"""``depth-sweep``: ResNet against Momentum ResNet (reversible) across depths: accuracy, memory, time.

The question the paper left open: what the exact, memory-free backward pass costs and saves as depth
grows. CIFAR ResNets of depth :math:`6n + 2` (He et al., 2016, :class:`~mode.nn.resnet.CifarResNet`) on
scikit-learn's digits (8 x 8, nothing downloaded), or on CIFAR-10 when ``--data`` points at a local copy
of its python batches. The momentum network is :func:`mode.to_momentum` of the same ResNet: in each stage
the blocks after the shape-changing one run as

.. math:: v_{i+1} = \gamma v_i + (1 - \gamma)(\mathrm{block}_i(x_i) - x_i), \qquad x_{i+1} = x_i + v_{i+1},

with :math:`\gamma = 0.9` and ``backprop="reversible"``. Both start from the same weights and see the
same batches (SGD with momentum, warm-up, cosine schedule).

Per depth and model: test accuracy, median wall time per epoch, and the activation memory of one
training step: the peak memory of a forward and backward minus the memory held before it, after an
identical warm-up step, measured in a process of its own (the definition of ``mode bench memory``:
resident set size on the CPU, allocated memory on a GPU). A momentum block stores
nothing for the backward pass, so only the stem, the shape-changing blocks and the head keep activations:
once every stage runs a MomentumNet (:math:`n \ge 2`, depth 14 and up) the momentum model's memory
stays flat in depth while the ResNet's grows linearly. At depth 8 (:math:`n = 1`) only the first stage
is converted, so the comparison of growth starts at the first depth of at least 14. Memory takes one step
per point, training takes epochs: the quick run measures memory at 20, 56 and 110 and trains at 8 and
20.
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from mode.datasets import cifar10, digits
from mode.experiments.registry import criterion, experiment
from mode.experiments.step_memory import measure_in_processes, step_activation_memory
from mode.nn import to_momentum
from mode.nn.resnet import CifarResNet

GAMMA = 0.9
#: The momentum model's backward pass: reversible, storing no block's activations.
BACKPROP = "reversible"
KINDS = {"resnet": "ResNet", "momentum": f"Momentum ResNet ({BACKPROP}, gamma = {GAMMA})"}
BATCH = 64
#: The smallest depth at which every stage has a block after its shape-changing one (n = 2).
ALL_STAGES_CONVERTED = 14
#: The momentum model's activation memory may grow by at most this fraction of the ResNet's growth over
#: the depths where every stage is converted (it grows only by its bit stack, about 0.15 bit per
#: coordinate and layer at gamma = 0.9, against several float32 tensors per layer for the ResNet).
FLAT = 0.2
#: ``max_train`` / ``max_test``: the first images of each split that are used (the digits have 1,438 and
#: 360; they cut CIFAR-10's 50,000 and 10,000 in the quick run).
QUICK = dict(
    train_depths=(8, 20), memory_depths=(20, 56, 110), epochs=2, lr=0.05, max_train=5000, max_test=2000
)
FULL = dict(
    train_depths=(8, 20, 56, 110),
    memory_depths=(8, 20, 56, 110),
    epochs=15,
    lr=0.05,
    max_train=None,
    max_test=None,
)


def build(kind: str, depth: int, in_channels: int, seed: int, backprop: str = BACKPROP) -> torch.nn.Module:
    """ResNet-``depth`` (``kind="resnet"``) or its momentum conversion (``backprop``), from ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CifarResNet(depth, in_channels=in_channels)
    return model if kind == "resnet" else to_momentum(model, gamma=GAMMA, backprop=backprop)


def step_memory(
    kind: str, depth: int, in_channels: int, size: int, seed: int, device: str, backprop: str
) -> dict:
    """Activation memory of one training step of :func:`build`'s model on ``BATCH`` random images
    (:func:`~mode.experiments.step_memory.step_activation_memory`, single-threaded like the training);
    run it in a process of its own (:func:`~mode.experiments.step_memory.measure_in_processes`)."""
    torch.set_num_threads(1)
    device = torch.device(device)
    model = build(kind, depth, in_channels, seed, backprop).to(device).train()
    x = torch.randn(BATCH, in_channels, size, size, generator=torch.Generator().manual_seed(seed))
    x, y = x.to(device), (torch.arange(BATCH) % 10).to(device)
    return step_activation_memory(lambda: torch.nn.functional.cross_entropy(model(x), y).backward(), device)


def logits(model: torch.nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """``model``'s outputs on ``x`` in evaluation mode, ``batch`` images at a time."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` classified as ``y`` (evaluation mode)."""
    return (logits(model, x).argmax(1) == y).double().mean().item()


def train(model, x, y, *, epochs: int, lr: float, seed: int, context, desc: str) -> list[float]:
    """SGD (momentum 0.9, weight decay 5e-4; linear warm-up from ``lr / 10`` over the first tenth of the
    steps, then a cosine schedule) on minibatches of ``BATCH``; returns the wall time of every epoch. The
    batch order depends on ``seed`` only, so both models see the same.

    The warm-up is He et al.'s remedy for ResNet-110, which without it stays at 0.40 test accuracy on
    digits after 15 epochs (seed 0) while the momentum network reaches 0.99.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps = epochs * -(-len(y) // BATCH)
    warm = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.SequentialLR(
        optimizer,
        [
            torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warm),
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps - warm),
        ],
        milestones=[warm],
    )
    order = torch.Generator().manual_seed(seed)
    times = []
    for epoch in range(epochs):
        model.train()
        start = time.perf_counter()
        batches = torch.randperm(len(y), generator=order).split(BATCH)
        for idx in context.progress(batches, desc=f"{desc}, epoch {epoch + 1}/{epochs}"):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
            schedule.step()
        times.append(time.perf_counter() - start)
    return times


def load_data(context, max_train: int | None = None, max_test: int | None = None, device="cpu"):
    """``(source, image size, (x_train, y_train, x_test, y_test))``: CIFAR-10 from ``context.data`` if
    given, else the digits split by ``context.seed``; the first ``max_train`` / ``max_test`` images of each
    split (all for ``None``), on ``device``."""
    if context.data is not None:
        source, size, splits = "cifar10", 32, cifar10(context.data)
    else:
        source, size, splits = "digits", 8, digits(seed=context.seed)
    # CIFAR-10's batches are shuffled, so the first images of a split are a sample of it
    cut = (max_train, max_train, max_test, max_test)
    return source, size, tuple(t[:n].to(device) for t, n in zip(splits, cut, strict=True))


@experiment(
    "depth-sweep",
    "ResNet vs Momentum ResNet (reversible) at depths 8-110 on digits (or CIFAR-10 with --data): test "
    "accuracy, activation memory of a training step and time per epoch",
)
def run(context) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = dict(QUICK if context.quick else FULL)
    source, size, (x_train, y_train, x_test, y_test) = load_data(
        context, settings["max_train"], settings["max_test"], device
    )
    in_channels = x_train.shape[1]
    settings = {
        **settings,
        "data": source,
        "image_size": size,
        "batch": BATCH,
        "gamma": GAMMA,
        "momentum_backprop": BACKPROP,
        "train_size": len(y_train),
        "test_size": len(y_test),
        "device": device,
        "memory": "peak minus baseline of one training step in its own process (as mode bench memory)",
    }
    depths = sorted({*settings["train_depths"], *settings["memory_depths"]})
    rows = {depth: {"depth": depth, **{kind: {} for kind in KINDS}} for depth in depths}
    for depth in settings["train_depths"]:
        for kind in KINDS:
            model = build(kind, depth, in_channels, context.seed, BACKPROP).to(device)
            times = train(
                model,
                x_train,
                y_train,
                epochs=settings["epochs"],
                lr=settings["lr"],
                seed=context.seed,
                context=context,
                desc=f"{kind}-{depth}",
            )
            rows[depth][kind]["test_accuracy"] = accuracy(model, x_test, y_test)
            rows[depth][kind]["epoch_time_s"] = float(np.median(times))
    points = [
        # the processes that measure import this module afresh: the backward pass travels with the point
        dict(
            kind=kind,
            depth=depth,
            in_channels=in_channels,
            size=size,
            seed=context.seed,
            device=device,
            backprop=BACKPROP,
        )
        for depth in settings["memory_depths"]
        for kind in KINDS
    ]
    for point, memory in zip(points, measure_in_processes(step_memory, points, context), strict=True):
        row = rows[point["depth"]][point["kind"]]
        row["activation_mib"] = memory["activation_bytes"] / 2**20
        row["peak_reset"] = memory["peak_reset"]  # False: the peak also covers the (equal) warm-up step
    rows = list(rows.values())
    _figure(context, rows, source)
    return {"settings": settings, **_judge(rows)}


def _judge(rows: list[dict]) -> dict:
    """Metrics and criteria from the table."""
    memory = {row["depth"]: row for row in rows if "activation_mib" in row["resnet"]}
    deepest = memory[max(memory)]
    converted = [depth for depth in memory if depth >= ALL_STAGES_CONVERTED]
    low, high = memory[min(converted)], memory[max(converted)]

    def mib(row, kind):
        return row[kind]["activation_mib"]

    trained = [row for row in rows if "test_accuracy" in row["resnet"]]
    ratio = f"memory ratio momentum / ResNet at depth {deepest['depth']}"
    growth = f"memory growth momentum / ResNet, depth {low['depth']} to {high['depth']}"
    gap = "max over depths of ResNet minus momentum test accuracy"
    time_ratio = f"epoch time ratio momentum / ResNet at depth {trained[-1]['depth']}"
    metrics = {
        "rows": rows,
        ratio: mib(deepest, "momentum") / mib(deepest, "resnet"),
        growth: (mib(high, "momentum") - mib(low, "momentum")) / (mib(high, "resnet") - mib(low, "resnet")),
        gap: max(row["resnet"]["test_accuracy"] - row["momentum"]["test_accuracy"] for row in trained),
        "min momentum test accuracy": min(row["momentum"]["test_accuracy"] for row in trained),
        time_ratio: trained[-1]["momentum"]["epoch_time_s"] / trained[-1]["resnet"]["epoch_time_s"],
        # one line per depth for the report, ResNet / momentum side by side
        **{f"depth {row['depth']} (ResNet / momentum)": _side_by_side(row) for row in rows},
    }
    criteria = {
        ratio: criterion(metrics[ratio], "<", 0.5),
        growth: criterion(metrics[growth], "<=", FLAT),
        # same weights, same batches: the reversible momentum network learns as well as the ResNet
        gap: criterion(metrics[gap], "<=", 0.05),
    }
    # time per epoch is reported, not judged: on a shared machine it measures the neighbours too
    return {"metrics": metrics, "criteria": criteria}


def _side_by_side(row: dict) -> str:
    formats = {"test_accuracy": "test accuracy {}", "activation_mib": "{} MiB", "epoch_time_s": "{} s/epoch"}
    return ", ".join(
        template.format(" / ".join(f"{row[kind][key]:.3g}" for kind in KINDS))
        for key, template in formats.items()
        if key in row["resnet"]
    )


def _figure(context, rows: list[dict], source: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = {
        "test_accuracy": "test accuracy",
        "activation_mib": "activation memory of a step (MiB)",
        "epoch_time_s": "time per epoch (s)",
    }
    for ax, (key, title) in zip(axes, panels.items(), strict=True):
        for (kind, label), marker in zip(KINDS.items(), "os", strict=True):
            points = [(row["depth"], row[kind][key]) for row in rows if key in row[kind]]
            ax.plot(*zip(*points, strict=True), marker=marker, label=label)
        depths = [row["depth"] for row in rows]
        ax.set(xlabel="depth", title=f"{title} [{source}]", xscale="log")
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.tick_params(which="minor", labelbottom=False)
    axes[0].legend(fontsize=8)
    context.save(fig, "depth_sweep")
