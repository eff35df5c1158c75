r"""Drop-in conversion of PyTorch models to momentum form, and back.

A residual block computes :math:`x \mapsto x + f(x)`. A run of shape-preserving blocks
:math:`x_{i+1} = x_i + f_i(x_i)` is the :math:`\gamma = 0` member of the momentum family, so the
conversion runs the same blocks, with the same parameters, as

.. math:: v_{i+1} = \gamma v_i + (1 - \gamma) f_i(x_i), \qquad x_{i+1} = x_i + v_{i+1},
          \qquad f_i(x) = \mathrm{block}_i(x) - x .

With ``branches=True`` the container's modules are the residual branches :math:`f_i` themselves (the
``is_residual=True`` form of momentumnet's conversion), and run unchanged.

The converted container keeps the original's children under the original names, so the converted model
has the original's ``state_dict`` keys: ``load_state_dict`` works in both directions, and
:func:`from_momentum` only has to give the containers their plain classes back.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, cast

import torch

from mode.nn.momentum_net import MomentumNet


class Residual(torch.nn.Module):
    """:math:`f(x, \\ldots) = \\mathrm{block}(x, \\ldots) - x`, refusing a block that changes the shape."""

    def __init__(self, block: torch.nn.Module, name: str):
        super().__init__()
        self.block, self.name = block, name

    def forward(self, x, *args, **kwargs):
        out = self.block(x, *args, **kwargs)
        if out.shape != x.shape:
            raise ValueError(
                f"{self.name} maps shape {tuple(x.shape)} to {tuple(out.shape)}: only shape-preserving "
                "blocks can run as momentum steps"
            )
        return out - x


def _child(path: str, name: str) -> str:
    """Dotted path of child ``name`` of the module at ``path`` (``""``: the model itself)."""
    return f"{path}.{name}" if path else name


def _depth(path: str) -> int:
    """Nesting depth of the module at dotted ``path`` (0: the model itself)."""
    return path.count(".") + 1 if path else 0


def _momentum_net(blocks, path: str, names, net_kwargs, branches: bool) -> list[MomentumNet]:
    # Held in a list so that nn.Module does not register it: the blocks stay registered once, under
    # their original names, and the state_dict keeps the original keys.
    if not branches:
        blocks = [Residual(b, _child(path, n)) for b, n in zip(blocks, names, strict=True)]
    return [MomentumNet(blocks, **net_kwargs)]


class MomentumSequential(torch.nn.Sequential):
    """An ``nn.Sequential`` whose blocks from index ``start`` on run as one :class:`~mode.MomentumNet`."""

    def __init__(
        self, container: torch.nn.Sequential, start: int, path: str, net_kwargs: dict, branches: bool = False
    ):
        super().__init__(OrderedDict(container._modules))
        self.start = start
        names = list(self._modules)[start:]
        self._momentum = _momentum_net(list(self)[start:], path, names, net_kwargs, branches)

    @property
    def momentum(self) -> MomentumNet:
        return self._momentum[0]

    def forward(self, x):
        for block in list(self)[: self.start]:
            x = block(x)
        return self.momentum(x)


class MomentumModuleList(torch.nn.ModuleList):
    """An ``nn.ModuleList`` that iterates as its layers before index ``start``, then a single
    :class:`~mode.MomentumNet` over the rest.

    Parents that loop ``for layer in self.layers: x = layer(x, ...)`` (``nn.TransformerEncoder``,
    ``nn.TransformerDecoder``) thus run those layers as momentum steps, with their masks passed on.
    """

    def __init__(
        self,
        container: torch.nn.ModuleList,
        path: str,
        net_kwargs: dict,
        start: int = 0,
        branches: bool = False,
    ):
        super().__init__(container)
        self.start = start
        names = list(self._modules)[start:]
        self._momentum = _momentum_net(list(container)[start:], path, names, net_kwargs, branches)

    @property
    def momentum(self) -> MomentumNet:
        return self._momentum[0]

    def __iter__(self):
        return iter([*list(self._modules.values())[: self.start], *self._momentum])


def _resnet_stage_start(stage: torch.nn.Sequential) -> int | None:
    """Index after the last shape-changing block of a torchvision ResNet stage (None: not such a stage)."""
    if not len(stage) or not all(hasattr(block, "downsample") for block in stage):
        return None
    changing = [i for i, block in enumerate(stage) if block.downsample is not None]
    start = changing[-1] + 1 if changing else 0
    return start if start < len(stage) else None


def _plain(module: torch.nn.Module) -> torch.nn.Module:
    """The plain container behind a converted one (the same children under the same names); any other
    module as it is."""
    if isinstance(module, MomentumSequential):
        return torch.nn.Sequential(OrderedDict(module._modules))
    if isinstance(module, MomentumModuleList):
        return torch.nn.ModuleList(module._modules.values())
    return module


def _default_targets(model: torch.nn.Module) -> dict[str, int]:
    targets = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, (torch.nn.TransformerEncoder, torch.nn.TransformerDecoder)):
            targets[prefix + "layers"] = 0
        elif isinstance(module, torch.nn.Sequential) and (start := _resnet_stage_start(module)) is not None:
            targets[name] = start
    return targets


#: The momentum of :func:`to_momentum` when neither ``gamma`` nor ``eps`` is given.
DEFAULT_GAMMA = 0.9


def to_momentum(
    model: torch.nn.Module,
    gamma: float | None = None,
    backprop: str = "reversible",
    layers: Sequence[str] | dict[str, int] | None = None,
    *,
    branches: bool = False,
    **net_kwargs: Any,
) -> torch.nn.Module:
    r"""A copy of ``model`` whose stacks of shape-preserving residual blocks run as
    :class:`~mode.MomentumNet`.

    Parameters
    ----------
    model : nn.Module
        Recognised without ``layers``: torchvision ResNets and the models sharing their structure
        (wide_resnet, resnext), where in each stage the shape-changing first block stays as it is and the
        rest become one MomentumNet; ``nn.TransformerEncoder`` / ``nn.TransformerDecoder``, where every
        layer becomes a momentum step and the masks passed as keyword arguments reach every layer.
        A model converted before is converted again from its plain containers, so the new arguments
        replace the old ones: converting twice with the same arguments gives the same model.
    gamma : float, optional
        Momentum in :math:`[0, 1)`; ``gamma=0`` with ``backprop="autograd"`` reproduces the original.
        Give at most one of ``gamma`` and ``eps``; without either, ``gamma`` is :data:`.DEFAULT_GAMMA`
        (0.9).
    backprop : {"reversible", "autograd", "checkpoint"}
        See :class:`~mode.MomentumNet`.
    layers : sequence of str, or dict from str to int, optional
        Dotted paths of the ``nn.Sequential`` / ``nn.ModuleList`` containers to convert, every block of
        each; a block that changes the shape raises ``ValueError`` naming it at the first forward. A dict
        maps each path to the index of its first converted block (the blocks before it run as they are,
        e.g. ``{"layer2": 1}`` keeps a stage's downsampling block). The empty path ``""`` names ``model``
        itself (an ``nn.Sequential`` of residual blocks), which is then returned converted. Pass it by
        keyword: the second positional argument is ``gamma``.
    branches : bool
        False (default): each converted module is a block computing :math:`x + f(x)`, and
        :math:`f(x) = \mathrm{block}(x) - x`. True: each module is the residual branch :math:`f` itself.
    **net_kwargs
        Further :class:`~mode.MomentumNet` arguments (``eps``, ``gamma_bits``, ``segments``, ...).

    Returns
    -------
    nn.Module
        The converted copy; it shares no tensors with ``model`` and has its ``state_dict`` keys.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(gamma, (str, list, tuple)):
        # the likely slip is to_momentum(model, ["layer1"]), meant as layers
        paths = [gamma] if isinstance(gamma, str) else list(gamma)
        raise TypeError(
            f"to_momentum's second positional argument is gamma, a real number in [0, 1), got "
            f"{type(gamma).__name__} {gamma!r}; pass the containers to convert by keyword: "
            f"to_momentum(model, layers={paths!r})"
        )
    if gamma is None and net_kwargs.get("eps") is None:
        gamma = DEFAULT_GAMMA
    elif gamma is not None and net_kwargs.get("eps") is not None:
        raise ValueError(
            f"give at most one of gamma and eps, got gamma={gamma!r} and eps={net_kwargs['eps']!r} "
            f"(without either, gamma = {DEFAULT_GAMMA})"
        )
    if layers is None:
        targets = _default_targets(model)
        if not targets:
            raise ValueError(
                "found no torchvision ResNet stage or nn.Transformer stack in the model: name the "
                "nn.Sequential / nn.ModuleList containers to convert with layers=['path.to.blocks', ...] "
                "('' for the model itself)"
            )
    else:
        if isinstance(layers, str) or not all(isinstance(p, str) for p in layers):
            raise TypeError(
                "layers must be a sequence of dotted module paths (str), e.g. layers=['layer1'], or a dict "
                "from such paths to the index of the first block to convert ('' for the model itself)"
            )
        targets = dict(layers) if isinstance(layers, dict) else dict.fromkeys(layers, 0)
        for path, start in targets.items():
            if isinstance(start, bool) or not isinstance(start, int) or start < 0:
                raise ValueError(
                    f"layers[{path!r}] must be the index (an int >= 0) of the first block to convert, got "
                    f"{start!r}"
                )
    model = copy.deepcopy(model)
    net_kwargs = dict(net_kwargs, gamma=gamma, backprop=backprop)
    # Deepest first: a container converted inside another must be in place before the outer one
    # collects its blocks.
    for path, start in sorted(targets.items(), key=lambda item: -_depth(item[0])):
        try:
            container = _plain(model.get_submodule(path))
        except AttributeError:
            raise ValueError(f"layers names {path!r}, which is not a submodule of the model") from None
        if isinstance(container, (torch.nn.Sequential, torch.nn.ModuleList)) and start >= len(container):
            raise ValueError(
                f"layers[{path!r}] = {start} leaves no block to convert: {path or 'the model'} has "
                f"{len(container)} blocks"
            )
        converted: torch.nn.Module
        if isinstance(container, torch.nn.Sequential):
            converted = MomentumSequential(container, start, path, net_kwargs, branches)
        elif isinstance(container, torch.nn.ModuleList):
            converted = MomentumModuleList(container, path, net_kwargs, start, branches)
        else:
            what = f"{path!r}" if path else "the model itself ('')"
            raise TypeError(
                f"{what} is a {type(container).__name__}; only nn.Sequential and nn.ModuleList "
                "stacks can be converted: name them in layers=[...]"
            )
        if not path:
            model = converted
            continue
        model.set_submodule(path, converted)
        parent = model.get_submodule(path.rpartition(".")[0])
        if isinstance(parent, torch.nn.TransformerEncoder) and not hasattr(
            parent, "momentum_saved_use_nested_tensor"
        ):
            # the nested-tensor fast path would hand the layers nested tensors; run them on plain tensors
            # Module.__setattr__ takes any value; torch's stub allows only Tensor | Module.
            parent.momentum_saved_use_nested_tensor = parent.use_nested_tensor  # type: ignore[assignment]
            parent.use_nested_tensor = False
    return model


def from_momentum(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of a :func:`to_momentum` model with its plain containers back (the original model)."""
    model = copy.deepcopy(model)
    for path, module in list(model.named_modules()):
        if isinstance(module, (MomentumSequential, MomentumModuleList)):
            if not path:
                model = _plain(module)
                continue
            model.set_submodule(path, _plain(module))
        elif isinstance(module, torch.nn.TransformerEncoder) and hasattr(
            module, "momentum_saved_use_nested_tensor"
        ):
            module.use_nested_tensor = cast(bool, module.momentum_saved_use_nested_tensor)
            del module.momentum_saved_use_nested_tensor
    return model
