r"""The API of the official Momentum ResNet package, ``momentumnet`` 0.10, on top of momentum-ode.

``import mode.compat.momentumnet as momentumnet`` runs code written for that package with its
signatures and defaults: ``MomentumNet(functions, gamma, init_speed=False, init_function=None,
use_backprop=True, is_residual=True)`` and ``transform_to_momentumnet(model, sub_layers, keep_first_layer,
gamma, use_backprop, is_residual)``. Both iterate

.. math:: v_{i+1} = \gamma v_i + (1 - \gamma) f_i(x_i, \ldots), \qquad x_{i+1} = x_i + v_{i+1},

with :math:`f_i` the function itself (``is_residual=True``) or :math:`\mathrm{function}_i(x) - x`
(``is_residual=False``). Checkpoints of the official package load as they are
(``load_state_dict`` translates their keys), and :func:`convert_state_dict` translates them for
:class:`mode.MomentumNet` and :func:`mode.to_momentum` models.

What changes (each is a fix or a clear error where the official package gives a wrong or silent result):

- ``use_backprop=False`` is the exactly reversible mode of :class:`mode.MomentumNet`: the gradients are
  those of autograd (the official package's differ by a factor of 30 at 100 layers with
  :math:`\gamma = 0.5`), including those of ``init_function``, which it returns as zero.
- :math:`\gamma` is rounded to a dyadic :math:`n / 2^k` within a relative :math:`10^{-9}`, in both modes.
- Keyword arguments of ``forward`` reach the functions (the official package drops them), so
  ``nn.TransformerEncoder`` masks apply in every layer.
- BatchNorm running statistics are updated once per forward pass, and the backward pass replays the
  forward's dropout masks.
- ``gamma`` must lie in :math:`[0, 1)` (:math:`\gamma = 1` ignores the functions), ``gamma = 0`` needs
  ``use_backprop=True`` (the step forgets :math:`v` and has no inverse), and ``init_speed=True`` needs an
  ``init_function``: each raises ``ValueError`` when the model is built.
- The modules' ``state_dict`` keys are this library's (``blocks.{i}``, ``v0``; the converted model's own
  keys after :func:`transform_to_momentumnet`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from mode.nn import momentum_net
from mode.nn.convert import Residual, to_momentum
from mode.ode import _real

#: The release of ``momentumnet`` whose API this module reproduces.
__version__ = "0.10"

__all__ = ["MomentumNet", "convert_state_dict", "transform_to_momentumnet"]

# ``[<path>.]network.<i | init>.<rest>``: a key of the official package's MomentumNet.
_NETWORK_KEY = re.compile(r"^(?:(?P<path>.+)\.)?network\.(?P<index>\d+|init)\.(?P<rest>.+)$")


def _standalone_key(path: str | None, index: str, rest: str, init: str = "v0", block: str = "") -> str:
    """Key of :class:`mode.MomentumNet` (at ``path``) for the official ``network.<index>.<rest>``."""
    local = f"{init}.{rest}" if index == "init" else f"blocks.{index}.{block}{rest}"
    return f"{path}.{local}" if path else local


def _check_sub_layers(sub_layers) -> None:
    # a single path would otherwise be iterated as its characters
    if isinstance(sub_layers, str):
        raise TypeError(f"sub_layers must be a sequence of dotted module paths, got the str {sub_layers!r}")


def convert_state_dict(state_dict, sub_layers: Sequence[str] = (), keep_first_layer: bool = True) -> dict:
    """Translate a ``momentumnet`` checkpoint's keys to those of this library's models.

    Parameters
    ----------
    state_dict : mapping
        A ``state_dict`` of a ``momentumnet`` model: a ``MomentumNet`` (keys ``network.{i}.*`` and
        ``network.init.*``), a model holding such nets, or the output of ``transform_to_momentumnet``.
    sub_layers : sequence of str
        The ``sub_layers`` that ``transform_to_momentumnet`` converted (empty: the checkpoint holds only
        ``MomentumNet`` modules built by hand).
    keep_first_layer : bool
        The ``keep_first_layer`` of that ``transform_to_momentumnet`` call.

    Returns
    -------
    dict
        The same tensors under this library's keys: ``<path>.network.{i}`` becomes ``<path>.blocks.{i}``
        and ``<path>.network.init`` becomes ``<path>.v0`` (the layout of :class:`mode.MomentumNet`); the
        containers of ``sub_layers`` get the original model's keys back (``<layer>.1.0.network.{j}``
        becomes ``<layer>.{j + 1}`` with ``keep_first_layer``, ``<layer>.0.network.{j}`` becomes
        ``<layer>.{j}`` without), which is what the original model, :func:`mode.to_momentum` and
        :func:`transform_to_momentumnet` of this module load.

    Raises
    ------
    ValueError
        A key under one of ``sub_layers`` is not laid out as ``transform_to_momentumnet`` with this
        ``keep_first_layer`` lays it out, or two keys translate to the same key.
    """
    _check_sub_layers(sub_layers)
    wrapper = ".1.0" if keep_first_layer else ".0"
    converted = {}
    for key, value in state_dict.items():
        match = _NETWORK_KEY.match(key)
        new = key
        if match is not None:
            path, index, rest = match["path"], match["index"], match["rest"]
            layer = next((s for s in sub_layers if path is not None and path.startswith(s + ".")), None)
            if layer is None:
                new = _standalone_key(path, index, rest)
            elif path != layer + wrapper or index == "init":
                raise ValueError(
                    f"state_dict key {key!r} lies under sub_layers entry {layer!r} but is not laid out as "
                    f"transform_to_momentumnet(keep_first_layer={keep_first_layer}) lays it out "
                    f"({layer}{wrapper}.network.<i>.*)"
                )
            else:
                new = f"{layer}.{int(index) + keep_first_layer}.{rest}"
        if new in converted:
            raise ValueError(f"state_dict keys translate to {new!r} twice")
        converted[new] = value
    return converted


class MomentumNet(momentum_net.MomentumNet):
    r"""``momentumnet.MomentumNet``: a Momentum ResNet over ``functions``, on :class:`mode.MomentumNet`.

    .. math:: v_{i+1} = \gamma v_i + (1 - \gamma) f_i(x_i, \ldots), \qquad x_{i+1} = x_i + v_{i+1}.

    Parameters
    ----------
    functions : list, nn.ModuleList or nn.Sequential
        The functions :math:`f_i`, each called as ``f_i(x, *args, **kwargs)``.
    gamma : float
        Momentum in :math:`[0, 1)`.
    init_speed : bool
        If True, :math:`v_0 = \mathrm{init\_function}(x_0)`; else :math:`v_0 = 0`.
    init_function : nn.Module, optional
        The initial velocity's module (registered, and unused, when ``init_speed`` is False).
    use_backprop : bool
        True: autograd stores the activations (``backprop="autograd"``). False: none are stored and the
        backward pass rebuilds them exactly (``backprop="reversible"``).
    is_residual : bool
        True: the functions are the residual branches :math:`f_i`. False: they compute
        :math:`x + f_i(x)`, and :math:`f_i(x) = \mathrm{function}_i(x) - x`.

    Notes
    -----
    ``load_state_dict`` also takes the official package's checkpoints (keys ``network.{i}.*``,
    ``network.init.*``). The differences from the official package are listed in
    :mod:`mode.compat.momentumnet`.
    """

    def __init__(
        self,
        functions,
        gamma,
        init_speed=False,
        init_function=None,
        use_backprop=True,
        is_residual=True,
    ):
        if _real("gamma", gamma) == 1.0:
            raise ValueError(
                "gamma must lie in [0, 1), got 1: with gamma = 1 every step is x <- x + v_0 whatever the "
                "functions"
            )
        if init_function is not None and not isinstance(init_function, torch.nn.Module):
            raise TypeError(f"init_function must be an nn.Module or None, got {type(init_function).__name__}")
        if init_speed and init_function is None:
            raise ValueError(
                "init_speed=True needs init_function, the module giving v_0 = init_function(x_0)"
            )
        blocks = momentum_net._as_blocks(functions)
        if not is_residual:
            blocks = [Residual(block, f"functions[{i}]") for i, block in enumerate(blocks)]
        super().__init__(
            blocks,
            gamma=gamma,
            backprop="autograd" if use_backprop else "reversible",
            v0=init_function if init_speed else None,
        )
        if init_function is not None and not init_speed:
            self.init = init_function
        self.use_backprop, self.init_speed = bool(use_backprop), bool(init_speed)
        self.is_residual = bool(is_residual)
        self.register_load_state_dict_pre_hook(_load_official_keys)

    @property
    def functions(self) -> list:
        """The functions as given (without the :math:`- x` of ``is_residual=False``)."""
        return [block.block if isinstance(block, Residual) else block for block in self.blocks]

    @property
    def init_function(self) -> torch.nn.Module | None:
        """The initial velocity's module, or None."""
        return self.v0 if self.init_speed else getattr(self, "init", None)


def _load_official_keys(module: MomentumNet, state_dict, prefix, *_) -> None:
    """``load_state_dict`` pre-hook: rename the official ``network.*`` keys under ``prefix`` in place."""
    init = "v0" if module.init_speed else "init"
    block = "" if module.is_residual else "block."
    for key in [k for k in state_dict if k.startswith(prefix + "network.")]:
        match = _NETWORK_KEY.match(key[len(prefix) :])
        if match is not None and match["path"] is None:
            new = prefix + _standalone_key(None, match["index"], match["rest"], init, block)
            state_dict[new] = state_dict.pop(key)


def transform_to_momentumnet(
    model: torch.nn.Module,
    sub_layers: Sequence[str] = ("layer1", "layer2", "layer3", "layer4"),
    keep_first_layer: bool = True,
    gamma: float = 0.9,
    use_backprop: bool = False,
    is_residual: bool = False,
) -> torch.nn.Module:
    r"""``momentumnet.transform_to_momentumnet``: a copy of ``model`` whose ``sub_layers`` run as Momentum
    ResNets, through :func:`mode.to_momentum`.

    Parameters
    ----------
    model : nn.Module
        The model to convert (a torchvision ResNet for the default ``sub_layers``, an ``nn.Transformer``
        with ``sub_layers=["encoder.layers", "decoder.layers"]``); it is not changed.
    sub_layers : sequence of str
        Dotted paths of the ``nn.Sequential`` / ``nn.ModuleList`` stacks to convert.
    keep_first_layer : bool
        Leave each stack's first block as it is (it may change the shape).
    gamma : float
        Momentum in :math:`[0, 1)`.
    use_backprop : bool
        False (default, as in the official package): exactly reversible backpropagation, no activation
        stored. True: autograd.
    is_residual : bool
        False (default): each block computes :math:`x + f(x)` and :math:`f(x) = \mathrm{block}(x) - x`.
        True: each block is :math:`f` itself.

    Returns
    -------
    nn.Module
        The converted copy. It has ``model``'s ``state_dict`` keys, and its ``load_state_dict`` also
        takes checkpoints of the official package's conversion with the same ``sub_layers`` and
        ``keep_first_layer`` (translated by :func:`convert_state_dict`).
    """
    _check_sub_layers(sub_layers)
    layers = dict.fromkeys(sub_layers, int(bool(keep_first_layer)))
    backprop = "autograd" if use_backprop else "reversible"
    converted = to_momentum(model, gamma, backprop, layers=layers, branches=bool(is_residual))

    def load_official_keys(_module, state_dict, prefix, *_):
        if prefix or not any(_NETWORK_KEY.match(k) for k in state_dict):
            return
        translated = convert_state_dict(state_dict, sub_layers, keep_first_layer)
        state_dict.clear()
        state_dict.update(translated)

    converted.register_load_state_dict_pre_hook(load_official_keys)
    return converted
