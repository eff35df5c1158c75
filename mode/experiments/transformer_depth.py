r"""``transformer-depth``: a pre-norm Transformer against its momentum conversion across depths.

The reviewers of Momentum ResNets asked for the depth study on residual architectures other than
ResNets, transformers first. A character-level (byte-level) language model on text that is on every
machine without a download: the source files of Python's standard library (:data:`TRAIN_FILES`,
:data:`VALIDATION_FILES`; split by file, so validation text is code the model has never seen; the
Python version, the byte counts and the text's SHA-256 are recorded, since the text changes with the
version). The model embeds bytes, adds learned positions and runs ``depth`` pre-norm
``nn.TransformerEncoderLayer`` blocks with a causal mask,
:math:`x \mapsto x + \mathrm{SA}(\mathrm{LN}(x))`, then :math:`x \mapsto x + \mathrm{FF}(\mathrm{LN}(x))`,
and a final LayerNorm and linear read-out. Its momentum version is :func:`mode.to_momentum` of the same
model, every layer a momentum step with :math:`f(x) = \mathrm{layer}(x) - x` and the mask passed on,

.. math:: v_{i+1} = \gamma v_i + (1 - \gamma) f_i(x_i), \qquad x_{i+1} = x_i + v_{i+1},

trained with ``backprop="reversible"`` for :math:`\gamma` in :data:`GAMMAS`. All three start from the
same weights and see the same batches (Adam, linear warm-up then cosine decay, no dropout).

Per depth and model: validation loss in bits per character (byte), the activation memory of one
training step (as in ``depth-sweep`` and ``mode bench memory``: peak minus baseline after an identical
warm-up step, one process per point) and the median wall time of a training step, over seeds (mean,
minimum and maximum).

Criteria, each false when its claim is: at every depth and for every :math:`\gamma`, the momentum
transformer's validation loss exceeds the transformer's by at most :data:`MARGIN_BPC` (mean over seeds;
a momentum model that learns worse, or a broken reversible gradient, leaves it); and the momentum
models' activation memory grows from the shallowest to the deepest depth by at most :data:`FLAT` of
the transformer's growth (a momentum model that stores its activations grows like the transformer).
The time per step is reported, not judged. The quick run trains at depths 2 and 8, one seed, on a
fifth of the text, with the exact integer kernels of the reversible mode run eagerly (as with
``MODE_COMPILE=0``; bit for bit the compiled results), since compiling them for every shape in every
measuring process would take longer than its training; the full run compiles them, as the library does
by default, so that its memory and time are what users get.
"""

from __future__ import annotations

import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from mode.datasets import python_source
from mode.exact import compiling, set_compile
from mode.experiments.registry import criterion, experiment
from mode.experiments.step_memory import measure_in_processes, step_activation_memory
from mode.nn import to_momentum

#: Training text: standard-library modules present, with the same role, in Python 3.10 to 3.13.
TRAIN_FILES = (
    "argparse.py",
    "ast.py",
    "calendar.py",
    "configparser.py",
    "csv.py",
    "dataclasses.py",
    "difflib.py",
    "fractions.py",
    "functools.py",
    "gettext.py",
    "heapq.py",
    "inspect.py",
    "json/decoder.py",
    "json/encoder.py",
    "logging/__init__.py",
    "pprint.py",
    "random.py",
    "shlex.py",
    "statistics.py",
    "string.py",
    "textwrap.py",
    "tokenize.py",
    "typing.py",
)
#: Validation text: other modules, never trained on.
VALIDATION_FILES = ("optparse.py", "queue.py", "sched.py", "fnmatch.py", "glob.py")
#: The momentum of the converted models.
GAMMAS = (0.5, 0.9)
#: Their backward pass: reversible, storing no layer's activations.
BACKPROP = "reversible"
#: The momentum transformer's validation loss may exceed the transformer's by this many bits per
#: character at any depth (about 5 % of the losses these runs reach).
MARGIN_BPC = 0.15
#: The momentum models' activation memory may grow from the shallowest to the deepest depth by at most
#: this fraction of the transformer's growth (it grows by its bit stack only, a fraction of a bit per
#: coordinate and layer, against a dozen saved tensors per layer, attention weights among them).
FLAT = 0.2
QUICK = dict(
    depths=(2, 8),
    seeds=1,
    train_files=TRAIN_FILES[:6],
    validation_files=VALIDATION_FILES[1:3],
    d_model=32,
    heads=4,
    context=32,
    batch=32,
    steps=200,
    lr=1e-2,
    validation_windows=128,
    compile=False,
)
FULL = dict(
    depths=(2, 4, 8, 16, 32),
    seeds=3,
    train_files=TRAIN_FILES,
    validation_files=VALIDATION_FILES,
    d_model=32,
    heads=4,
    context=32,
    batch=32,
    steps=400,
    lr=1e-2,
    validation_windows=1024,
    compile=True,
)
VOCABULARY = 256


class CharTransformer(torch.nn.Module):
    """Byte embedding and learned positions, ``depth`` pre-norm causal encoder layers, LayerNorm and a
    linear read-out to next-byte logits.

    The layers are built one by one: ``nn.TransformerEncoder`` alone would copy one layer ``depth``
    times, so that every layer would start from the same weights.
    """

    def __init__(self, depth: int, d_model: int, heads: int, context: int):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCABULARY, d_model)
        self.position = torch.nn.Parameter(0.02 * torch.randn(context, d_model))
        layers = [
            torch.nn.TransformerEncoderLayer(
                d_model, heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True
            )
            for _ in range(depth)
        ]
        self.encoder = torch.nn.TransformerEncoder(layers[0], depth, enable_nested_tensor=False)
        self.encoder.layers = torch.nn.ModuleList(layers)
        self.norm = torch.nn.LayerNorm(d_model)
        self.head = torch.nn.Linear(d_model, VOCABULARY)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        mask = torch.nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device)
        hidden = self.encoder(self.embed(tokens) + self.position[:length], mask=mask, is_causal=True)
        return self.head(self.norm(hidden))


def kinds(gammas=GAMMAS) -> dict[str, float | None]:
    """Model name -> gamma (None: the transformer itself)."""
    return {"transformer": None, **{f"momentum gamma={g}": g for g in gammas}}


def build(gamma: float | None, depth: int, settings: dict, seed: int, backprop: str = BACKPROP):
    """The transformer of ``depth`` layers from ``seed``, or its momentum conversion at ``gamma``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CharTransformer(depth, settings["d_model"], settings["heads"], settings["context"])
    return model if gamma is None else to_momentum(model, gamma=gamma, backprop=backprop)


def next_byte_loss(model: torch.nn.Module, rows: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``model``'s prediction of every byte of ``rows`` after the first from the bytes
    before it, in nats (``reduction`` as in ``cross_entropy``)."""
    logits = model(rows[:, :-1])
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten(), reduction=reduction)


def bits_per_character(model: torch.nn.Module, windows: torch.Tensor) -> float:
    """Mean next-byte cross-entropy of ``model`` over ``windows`` (rows of ``context + 1`` bytes), in
    bits: :math:`-\\frac{1}{N}\\sum \\log_2 p(b_{t+1} \\mid b_{\\le t})`."""
    model.eval()
    with torch.no_grad():
        nats = sum(next_byte_loss(model, rows, "sum").item() for rows in windows.split(256))
    return nats / (windows.shape[0] * (windows.shape[1] - 1)) / math.log(2)


def validation_windows(tokens: torch.Tensor, context: int, count: int) -> torch.Tensor:
    """``count`` windows of ``context + 1`` bytes at evenly spaced offsets of the validation text."""
    starts = torch.linspace(0, len(tokens) - context - 1, count).long()
    return torch.stack([tokens[s : s + context + 1] for s in starts])


def train(model, tokens: torch.Tensor, settings: dict, seed: int, context, desc: str) -> list[float]:
    """Adam on random windows of the training text (the same for every model: they depend on
    ``seed`` only), with a linear warm-up over the first tenth of the steps and a cosine decay; returns
    the wall time of every step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"])
    steps, warm = settings["steps"], max(1, settings["steps"] // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda i: (i + 1) / warm if i < warm else 0.5 * (1 + math.cos(math.pi * (i - warm) / (steps - warm))),
    )
    order = torch.Generator().manual_seed(seed)
    span = settings["context"] + 1
    times = []
    model.train()
    for _ in context.progress(range(steps), desc=desc):
        starts = torch.randint(0, len(tokens) - span, (settings["batch"],), generator=order)
        rows = tokens[starts[:, None] + torch.arange(span)]
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        next_byte_loss(model, rows).backward()
        optimizer.step()
        schedule.step()
        times.append(time.perf_counter() - start)
    return times


def step_memory(gamma: float | None, depth: int, settings: dict, seed: int, backprop: str) -> dict:
    """Activation memory of one training step (forward and backward) of :func:`build`'s model on a
    batch of random bytes; run it in a process of its own
    (:func:`~mode.experiments.step_memory.measure_in_processes`)."""
    torch.set_num_threads(1)
    set_compile(settings["compile"])  # this process ends with the point: nothing to restore
    model = build(gamma, depth, settings, seed, backprop).train()
    rows = torch.randint(
        0,
        VOCABULARY,
        (settings["batch"], settings["context"] + 1),
        generator=torch.Generator().manual_seed(seed),
    )
    return step_activation_memory(lambda: next_byte_loss(model, rows).backward(), torch.device("cpu"))


def _spread(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "min": float(min(values)), "max": float(max(values))}


@experiment(
    "transformer-depth",
    "Pre-norm causal Transformer vs its momentum conversion (reversible, gamma 0.5 and 0.9) at depths 2-32, "
    "byte-level language model on Python's standard library: validation bits per character, activation "
    "memory and time of a training step",
)
def run(context) -> dict:
    settings = dict(QUICK if context.quick else FULL)
    train_tokens, train_record = python_source(settings["train_files"])
    validation_tokens, validation_record = python_source(settings["validation_files"])
    windows = validation_windows(validation_tokens, settings["context"], settings["validation_windows"])
    models = kinds()
    seeds = [context.seed + i for i in range(settings["seeds"])]
    runs: dict = {depth: {kind: {"bpc": [], "step_s": []} for kind in models} for depth in settings["depths"]}
    with compiling(settings["compile"]):
        for seed in seeds:
            for depth in settings["depths"]:
                for kind, gamma in models.items():
                    model = build(gamma, depth, settings, seed)
                    desc = f"{kind}, depth {depth}, seed {seed}"
                    times = train(model, train_tokens, settings, seed, context, desc)
                    runs[depth][kind]["bpc"].append(bits_per_character(model, windows))
                    runs[depth][kind]["step_s"].append(float(np.median(times)))
    points = [
        # the measuring processes import this module afresh: the backward pass travels with the point
        dict(gamma=gamma, depth=depth, settings=settings, seed=context.seed, backprop=BACKPROP)
        for depth in settings["depths"]
        for gamma in models.values()
    ]
    memory = measure_in_processes(step_memory, points, context)
    rows = []
    for depth in settings["depths"]:
        row: dict = {"depth": depth}
        for kind, gamma in models.items():
            point = next(
                m for p, m in zip(points, memory, strict=True) if p["depth"] == depth and p["gamma"] == gamma
            )
            row[kind] = {
                "validation_bpc": _spread(runs[depth][kind]["bpc"]),
                "step_s": _spread(runs[depth][kind]["step_s"]),
                "activation_mib": point["activation_bytes"] / 2**20,
                "peak_reset": point["peak_reset"],
            }
        rows.append(row)
    _figure(context, rows, models)
    settings = {
        **settings,
        "gammas": list(GAMMAS),
        "momentum_backprop": BACKPROP,
        "seed_list": seeds,
        "train_text": train_record,
        "validation_text": validation_record,
        "device": "cpu",
        "memory": "peak minus baseline of one training step in its own process (as mode bench memory)",
    }
    return {"settings": settings, **_judge(rows, models)}


def _judge(rows: list[dict], models: dict) -> dict:
    """Metrics and criteria from the table."""
    low, high = rows[0], rows[-1]
    momentum = [kind for kind, gamma in models.items() if gamma is not None]

    def bpc(row, kind):
        return row[kind]["validation_bpc"]["mean"]

    def growth(kind):
        return high[kind]["activation_mib"] - low[kind]["activation_mib"]

    metrics: dict = {"rows": rows}
    criteria = {}
    for kind in momentum:
        gap = f"{kind}: max over depths of validation bpc minus the transformer's"
        metrics[gap] = max(bpc(row, kind) - bpc(row, "transformer") for row in rows)
        # where the momentum transformer loses, the report names the depths (the per-depth lines give the
        # numbers), whether or not the loss is within the margin
        losing = [str(row["depth"]) for row in rows if bpc(row, kind) > bpc(row, "transformer")]
        metrics[f"{kind}: depths where its validation bpc is above the transformer's"] = (
            ", ".join(losing) or "none"
        )
        criteria[gap] = criterion(metrics[gap], "<=", MARGIN_BPC)
        grow = f"{kind}: memory growth / transformer's, depth {low['depth']} to {high['depth']}"
        metrics[grow] = growth(kind) / growth("transformer")
        criteria[grow] = criterion(metrics[grow], "<=", FLAT)
        metrics[f"{kind}: step time / transformer's at depth {high['depth']}"] = (
            high[kind]["step_s"]["mean"] / high["transformer"]["step_s"]["mean"]
        )
    for row in rows:
        metrics[f"depth {row['depth']} ({' / '.join(models)})"] = _side_by_side(row, models)
    return {"metrics": metrics, "criteria": criteria}


def _side_by_side(row: dict, models: dict) -> str:
    return (
        "validation bpc "
        + " / ".join(f"{row[kind]['validation_bpc']['mean']:.3f}" for kind in models)
        + ", "
        + " / ".join(f"{row[kind]['activation_mib']:.3g}" for kind in models)
        + " MiB, "
        + " / ".join(f"{1e3 * row[kind]['step_s']['mean']:.3g}" for kind in models)
        + " ms/step"
    )


def _figure(context, rows: list[dict], models: dict) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    depths = [row["depth"] for row in rows]
    for kind, marker in zip(models, "osd", strict=False):
        for ax, key, scale in zip(
            axes, ("validation_bpc", "activation_mib", "step_s"), (1, 1, 1e3), strict=True
        ):
            if key == "activation_mib":
                ax.plot(depths, [row[kind][key] for row in rows], marker=marker, label=kind)
                continue
            mean = np.array([row[kind][key]["mean"] for row in rows]) * scale
            low = mean - np.array([row[kind][key]["min"] for row in rows]) * scale
            high = np.array([row[kind][key]["max"] for row in rows]) * scale - mean
            ax.errorbar(depths, mean, yerr=[low, high], marker=marker, capsize=3, label=kind)
    titles = ("validation bits per character", "activation memory of a step (MiB)", "time per step (ms)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set(xlabel="depth (layers)", title=title, xscale="log")
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.tick_params(which="minor", labelbottom=False)
    axes[0].legend(fontsize=8)
    context.save(fig, "transformer_depth")
