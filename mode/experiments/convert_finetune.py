r"""``convert-finetune``: a pretrained ResNet converted to a Momentum ResNet and fine-tuned briefly with
the reversible backward pass keeps its accuracy; what the conversion costs and saves.

The question: can a trained ResNet become a reversible network without training it anew? A CIFAR ResNet
(He et al., 2016, :class:`~mode.nn.resnet.CifarResNet`) is trained on scikit-learn's digits (8 x 8,
nothing downloaded), or on CIFAR-10 when ``--data`` points at a local copy of its python batches, for a
fixed number of epochs, and its ``state_dict`` is saved in the run's folder (``pretrained_seed{S}.pt``).
Every variant starts from that file. :func:`mode.to_momentum` converts it: in each stage the blocks after
the shape-changing one run, with their trained weights, as

.. math:: v_{i+1} = \gamma v_i + (1 - \gamma) f_i(x_i), \qquad x_{i+1} = x_i + v_{i+1},
          \qquad f_i(x) = \mathrm{block}_i(x) - x, \qquad v_0 = 0,

for :math:`\gamma \in \{0, 0.5, 0.9, 0.99\}`. At :math:`\gamma = 0` the step is
:math:`x_{i+1} = x_i + (\mathrm{block}_i(x_i) - x_i)`, the ResNet up to that rounding, and has no inverse,
so it runs with ``backprop="autograd"``; the others run with ``backprop="reversible"``, which stores no
converted block's activations. With :math:`\gamma > 0` the network computes another function (the first
converted block of a stage adds only :math:`(1 - \gamma) f`, and BatchNorm's running statistics no longer
match its inputs), so its accuracy falls at conversion. Each conversion is then fine-tuned by
:func:`~mode.experiments.depth_sweep.train` with the same settings and batch order for all, at a fifth of
the pre-training learning rate (fixed beforehand), for each budget of epochs, every budget a complete
schedule from the converted weights. The baseline ("continue") trains the original ResNet for the same
budgets with the same settings, so that what the conversion costs is not mixed up with what more training
gains. The test split only measures: fixed epochs and learning rates, nothing is chosen on it.

Per variant: test accuracy right after conversion and after each budget (one seed in the quick run,
three in the full one, each seeding the initial weights and the batch order on the split of the run's
seed: mean and range), the activation memory of one training step of the first seed's
model on the first training batch (the definition of ``mode bench memory``, each variant in a process of
its own: :func:`~mode.experiments.step_memory.step_activation_memory`), and the time per fine-tuning step
(median over the fine-tuning epochs of the epoch's time over its steps). The exact integer kernels of the
reversible mode run eagerly (as with ``MODE_COMPILE=0``; the results are bit for bit those of the
compiled kernels): compiling them anew for every input shape and :math:`\gamma` took longer than the
whole fine-tuning at these sizes.

The criteria, and how each fails when its claim is false:

* exactness: the :math:`\gamma = 0` conversion changes no test prediction and no test accuracy, for any
  seed. It fails if the conversion does not reproduce the residual blocks (another :math:`\gamma`, a
  block dropped or run twice).
* accuracy kept: after the largest budget, the :math:`\gamma = 0.5` and :math:`\gamma = 0.9` conversions
  are at most :data:`MARGIN` below the continued ResNet of the same seed, for every seed. It fails if
  fine-tuning does not repair the conversion within the budget: at a learning rate of 0, where only
  BatchNorm's running statistics still move, :math:`\gamma = 0.9` stays far below. :math:`\gamma = 0.99`
  is reported with whether it is within the margin: its converted stages start out close to the
  identity and have the most to relearn.
* fine-tuning does the repair: right after conversion, :math:`\gamma = 0.9` is at least :data:`GAP` below
  the original, for every seed. It fails on a conversion that changes nothing, which would keep the
  accuracy without any fine-tuning.

Memory and step time are reported, not judged. A reversible step keeps, besides the activations of the
stem, the shape-changing blocks and the head, the integer state and bit stack of each converted stage and
the scratch tensors of the eager integer kernels: on digits at batch 64 about 10 MiB whatever the depth,
where the ResNet's activations grow by about 0.3 MiB per layer. At the quick depth (20) the reversible
conversions thus took about 1.6 times the ResNet's memory, at the full depth (56) about 0.6 times; the
:math:`\gamma = 0` conversion, which stores its velocities too, about 1.2 times at both. depth-sweep
judges how memory grows with depth. Step time measures the neighbours on a shared machine as much as the
code.
"""

from __future__ import annotations

import statistics

import matplotlib.pyplot as plt
import numpy as np
import torch

from mode.exact import compiling, set_compile
from mode.experiments.depth_sweep import BATCH, accuracy, build, load_data, logits, train
from mode.experiments.registry import criterion, experiment
from mode.experiments.step_memory import measure_in_processes, step_activation_memory
from mode.nn import to_momentum

#: The momenta the pretrained ResNet is converted with; 0 reproduces it.
GAMMAS = (0.0, 0.5, 0.9, 0.99)
#: Conversions judged against the continued ResNet.
JUDGED = (0.5, 0.9)
#: Test accuracy a judged conversion may lose against the continued ResNet after the largest budget (every
#: seed). On digits a test image is 1/359 = 0.0028 of the accuracy; fine-tuned at gamma 0.5 and 0.9, the
#: conversions ended between 5 images above and 3 below the continued ResNet of their seed (quick run at
#: seeds 0 and 1, full run at seeds 0 to 2): 0.02 is 7 images, above that scatter and far below the drop
#: at conversion.
MARGIN = 0.02
#: Least accuracy the gamma = 0.9 conversion loses at conversion, every seed (measured 0.71 to 0.85 at
#: depths 14 to 56): fine-tuning, not the conversion, brings it within the margin.
GAP = 0.3
#: The conversion whose drop at conversion shows that fine-tuning does the repair.
GAP_GAMMA = 0.9
CONTINUE = "continue"
#: ``max_train`` / ``max_test``: the first images of each split that are used (the digits have 1,438 and
#: 359; they cut CIFAR-10's 50,000 and 10,000 in the quick run). ``lr``: pre-training; ``fine_tune_lr``:
#: every fine-tuning run, fixed at a fifth of it before any measurement.
QUICK = dict(
    depth=20,
    pretrain_epochs=10,
    lr=0.05,
    fine_tune_lr=0.01,
    budgets=(1, 2),
    seeds=1,
    max_train=5000,
    max_test=2000,
)
FULL = dict(
    depth=56,
    pretrain_epochs=15,
    lr=0.05,
    fine_tune_lr=0.01,
    budgets=(1, 2, 5),
    seeds=3,
    max_train=None,
    max_test=None,
)


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' * (n != 1)}"


def variant(gamma: float | None) -> str:
    """The row name of the conversion with ``gamma`` (``None``: the continued ResNet)."""
    return CONTINUE if gamma is None else f"gamma = {gamma:g}"


def backprop(gamma: float) -> str:
    """The backward pass of the conversion with ``gamma``: reversible, except at ``gamma = 0``, which has
    no inverse and runs with autograd."""
    return "autograd" if gamma == 0 else "reversible"


def convert(model: torch.nn.Module, gamma: float) -> torch.nn.Module:
    """:func:`mode.to_momentum` of ``model`` with ``gamma`` and :func:`backprop`."""
    return to_momentum(model, gamma=gamma, backprop=backprop(gamma))


def pretrained(path, depth: int, in_channels: int, gamma: float | None, device) -> torch.nn.Module:
    """The ResNet saved at ``path``, converted with ``gamma`` unless that is ``None``."""
    model = build("resnet", depth, in_channels, seed=0)  # every weight is replaced by the saved ones
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return (model if gamma is None else convert(model, gamma)).to(device)


def step_memory(
    path: str, depth: int, gamma: float | None, x: torch.Tensor, y: torch.Tensor, device: str
) -> dict:
    """Activation memory of one training step of the saved ResNet or its conversion on the batch ``x``,
    ``y`` (:func:`~mode.experiments.step_memory.step_activation_memory`, single-threaded and with the exact
    kernels run eagerly, like the fine-tuning); run it in a process of its own
    (:func:`~mode.experiments.step_memory.measure_in_processes`)."""
    torch.set_num_threads(1)
    set_compile(False)  # this process ends with the point: nothing to restore
    device = torch.device(device)
    model = pretrained(path, depth, x.shape[1], gamma, device).train()
    x, y = x.to(device), y.to(device)
    return step_activation_memory(lambda: torch.nn.functional.cross_entropy(model(x), y).backward(), device)


@experiment(
    "convert-finetune",
    "Pretrained ResNet converted to a Momentum ResNet (gamma 0-0.99) and fine-tuned with the reversible "
    "backward pass: test accuracy against the continued ResNet, activation memory and step time",
)
def run(context) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = dict(QUICK if context.quick else FULL)
    source, size, data = load_data(context, settings["max_train"], settings["max_test"], device)
    seeds = [context.seed + i for i in range(settings["seeds"])]
    settings = {
        **settings,
        "data": source,
        "image_size": size,
        "batch": BATCH,
        "gammas": GAMMAS,
        "backprop": {variant(g): backprop(g) for g in GAMMAS},
        "seed_list": seeds,
        "train_size": len(data[1]),
        "test_size": len(data[3]),
        "device": device,
        "exact_kernels": "eager (as MODE_COMPILE=0; bit for bit the compiled results): compiling them for "
        "every shape and gamma took longer than the fine-tuning at this size",
        "optimiser": "SGD, momentum 0.9, weight decay 5e-4, linear warm-up over the first tenth of the "
        "steps, then cosine; every budget a complete schedule from the converted weights",
        "memory": "peak minus baseline of one training step on the first training batch, in its own "
        "process (as mode bench memory), of the first seed's model",
        "step time": "median over the fine-tuning epochs of the epoch's time over its steps",
    }
    variants = [None, *GAMMAS]
    rows = {
        variant(g): {
            "gamma": g,
            "epochs": [0, *settings["budgets"]],
            "test_accuracy": [[] for _ in range(1 + len(settings["budgets"]))],  # per epoch, per seed
            "step_times": [],
        }
        for g in variants
    }
    exactness: dict[str, list] = {
        "predictions changed": [],
        "max |logit difference|": [],
        "accuracy change": [],
    }
    with compiling(False):
        train_accuracy = [_one_seed(context, seed, data, settings, rows, exactness) for seed in seeds]
    points = [
        dict(
            path=str(_checkpoint(context, seeds[0])),
            depth=settings["depth"],
            gamma=gamma,
            x=data[0][:BATCH].cpu(),
            y=data[1][:BATCH].cpu(),
            device=device,
        )
        for gamma in variants
    ]
    for gamma, memory in zip(variants, measure_in_processes(step_memory, points, context), strict=True):
        row = rows[variant(gamma)]
        row["activation_mib"] = memory["activation_bytes"] / 2**20
        row["peak_reset"] = memory["peak_reset"]  # False: the peak also covers the (equal) warm-up step
        row["step_s"] = statistics.median(row.pop("step_times"))
    _figure(context, rows, source, settings["depth"])
    return {"settings": settings, **_judge(rows, exactness, min(train_accuracy))}


def _checkpoint(context, seed: int):
    return context.out / f"pretrained_seed{seed}.pt"


def _one_seed(context, seed: int, data, settings: dict, rows: dict, exactness: dict) -> float:
    """Pre-train from ``seed`` and save; then, for every variant of the saved ResNet, the test accuracy
    right after conversion and after each budget, appended to ``rows``; the gamma = 0 conversion's
    agreement with the ResNet appended to ``exactness``. Returns the ResNet's training accuracy."""
    x_train, y_train, x_test, y_test = data
    depth, in_channels, device = settings["depth"], x_train.shape[1], x_train.device
    steps = -(-len(y_train) // BATCH)
    path = _checkpoint(context, seed)
    model = build("resnet", depth, in_channels, seed).to(device)
    pretraining = dict(epochs=settings["pretrain_epochs"], lr=settings["lr"], seed=seed, context=context)
    train(model, x_train, y_train, **pretraining, desc=f"pre-training, seed {seed}")
    torch.save(model.state_dict(), path)
    original = pretrained(path, depth, in_channels, None, device)
    reference = logits(original, x_test)
    fine_tuning = dict(lr=settings["fine_tune_lr"], seed=seed, context=context)
    for gamma in [None, *GAMMAS]:
        row = rows[variant(gamma)]
        outputs = logits(pretrained(path, depth, in_channels, gamma, device), x_test)
        row["test_accuracy"][0].append((outputs.argmax(1) == y_test).float().mean().item())
        if gamma == 0:
            exactness["predictions changed"].append(int((outputs.argmax(1) != reference.argmax(1)).sum()))
            exactness["max |logit difference|"].append(float((outputs - reference).abs().max()))
            exactness["accuracy change"].append(
                row["test_accuracy"][0][-1] - rows[CONTINUE]["test_accuracy"][0][-1]
            )
        for i, budget in enumerate(settings["budgets"], 1):
            model = pretrained(path, depth, in_channels, gamma, device)
            desc = f"{variant(gamma)}, {_epochs(budget)}, seed {seed}"
            times = train(model, x_train, y_train, **fine_tuning, epochs=budget, desc=desc)
            row["test_accuracy"][i].append(accuracy(model, x_test, y_test))
            row["step_times"] += [t / steps for t in times]
    return accuracy(original, x_train, y_train)


def _judge(rows: dict, exactness: dict, train_accuracy: float) -> dict:
    """Metrics and criteria from the table (per variant, per epoch, one test accuracy per seed)."""
    budget = rows[CONTINUE]["epochs"][-1]

    def shortfall(gamma):  # per seed: the continued ResNet minus the conversion after the largest budget
        return np.subtract(rows[CONTINUE]["test_accuracy"][-1], rows[variant(gamma)]["test_accuracy"][-1])

    changed = "gamma = 0: max over seeds of test predictions changed by the conversion"
    accuracy_change = "gamma = 0: max over seeds of |test accuracy change| at conversion"
    gap = f"gamma = {GAP_GAMMA:g}: min over seeds of original minus converted test accuracy at conversion"
    memory = "max over reversible conversions of activation memory / ResNet's"
    kept = {
        g: f"gamma = {g:g}: max over seeds of continued ResNet minus converted test accuracy after "
        f"{_epochs(budget)}"
        for g in GAMMAS
        if g
    }
    resnet_mib = rows[CONTINUE]["activation_mib"]
    metrics = {
        "rows": rows,
        "min over seeds of the pretrained ResNet's training accuracy": train_accuracy,
        "gamma = 0: max over seeds of |logit difference| at conversion": max(
            exactness["max |logit difference|"]
        ),
        changed: max(exactness["predictions changed"]),
        accuracy_change: max(abs(d) for d in exactness["accuracy change"]),
        gap: float(
            min(np.subtract(rows[CONTINUE]["test_accuracy"][0], rows[variant(GAP_GAMMA)]["test_accuracy"][0]))
        ),
        **{name: float(shortfall(g).max()) for g, name in kept.items()},
        memory: max(rows[variant(g)]["activation_mib"] for g in GAMMAS if g) / resnet_mib,
    }
    for g in kept:
        if g not in JUDGED:
            metrics[f"gamma = {g:g} within the margin {MARGIN} of the continued ResNet for every seed"] = (
                bool(metrics[kept[g]] <= MARGIN)
            )
    # one line per variant for the report
    metrics.update(
        {f"{name}: test accuracy; memory; step time": _line(row, resnet_mib) for name, row in rows.items()}
    )
    criteria = {
        changed: criterion(metrics[changed], "<=", 0),
        accuracy_change: criterion(metrics[accuracy_change], "<=", 0),
        **{kept[g]: criterion(metrics[kept[g]], "<=", MARGIN) for g in JUDGED},
        gap: criterion(metrics[gap], ">=", GAP),
    }
    # memory and step time are reported, not judged (see the module's docstring)
    return {"metrics": metrics, "criteria": criteria}


def _line(row: dict, resnet_mib: float) -> str:
    """Test accuracy (mean, and range over the seeds) before and after each budget; memory; step time."""

    def spread(values):
        mean = f"{np.mean(values):.3f}"
        return mean if len(values) == 1 else f"{mean} [{min(values):.3f}, {max(values):.3f}]"

    start = "pretrained" if row["gamma"] is None else "at conversion"
    accuracies = ", ".join(
        f"{spread(values)} {start if epochs == 0 else f'after {_epochs(epochs)}'}"
        for epochs, values in zip(row["epochs"], row["test_accuracy"], strict=True)
    )
    return (
        f"{accuracies}; {row['activation_mib']:.3g} MiB ({row['activation_mib'] / resnet_mib:.2f} of the "
        f"ResNet's); {1e3 * row['step_s']:.3g} ms/step"
    )


def _figure(context, rows: dict, source: str, depth: int) -> None:
    """Test accuracy against fine-tuning epochs; the same as the shortfall against the continued ResNet,
    on a scale that shows the margin; memory and step time per variant."""
    fig, axes = plt.subplots(1, 4, figsize=(18, 4), gridspec_kw={"width_ratios": [1.6, 1.6, 1, 1]})
    colors = [f"C{i}" for i in range(len(rows))]
    seeds = len(rows[CONTINUE]["test_accuracy"][0])
    over = f"mean{', range' if seeds > 1 else ''} over {seeds} seed{'s' * (seeds > 1)}"
    continued = np.array(rows[CONTINUE]["test_accuracy"])  # epochs x seeds
    for (name, row), color in zip(rows.items(), colors, strict=True):
        values = np.array(row["test_accuracy"])
        label = f"ResNet-{depth}, continued" if row["gamma"] is None else f"{name} ({backprop(row['gamma'])})"
        # gamma = 0 lies on the continued ResNet: dashed, so that both show
        style = "--" if row["gamma"] == 0 else "-"
        for ax, y, legend in ((axes[0], values, label), (axes[1], continued - values, None)):
            ax.plot(row["epochs"], y.mean(1), style, marker="o", color=color, label=legend)
            ax.fill_between(row["epochs"], y.min(1), y.max(1), color=color, alpha=0.2)
    axes[1].axhline(
        MARGIN, color="k", linestyle=":", label=f"margin {MARGIN} (gamma {', '.join(map(str, JUDGED))})"
    )
    # linear within a margin of zero, logarithmic beyond: the drop at conversion and the margin both show
    axes[1].set_yscale("symlog", linthresh=MARGIN)
    axes[0].set(ylabel=f"test accuracy ({over})", title=f"accuracy [{source}, ResNet-{depth}]")
    axes[1].set(
        ylabel="continued ResNet minus variant, same seed", title="shortfall against the continued ResNet"
    )
    for ax in axes[:2]:
        ax.set(xlabel="fine-tuning epochs (0: right after conversion)", xticks=rows[CONTINUE]["epochs"])
        ax.legend(fontsize=8)
    labels = ["ResNet" if row["gamma"] is None else f"γ={row['gamma']:g}" for row in rows.values()]
    panels = {
        "activation_mib": ("activation memory of a step (MiB)", 1.0),
        "step_s": ("time per step (ms)", 1e3),
    }
    for ax, (key, (title, scale)) in zip(axes[2:], panels.items(), strict=True):
        ax.bar(labels, [scale * row[key] for row in rows.values()], color=colors)
        ax.set(title=f"{title} [{source}]")
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    context.save(fig, "convert_finetune")
