"""Fused integer kernels: the pure per-layer functions compiled by inductor, with an eager fallback.

The exact arithmetic of one layer is a few dozen elementwise int64 operations; run one by one, each
reads and writes the whole state. Compiled (inductor: C++ on the CPU, Triton on a GPU) they become one
loop. Every fused function is pure integer arithmetic whose result is fixed by its definition (exact
integer operations, and float operations rounded exactly as in eager PyTorch), so the compiled and the
eager function agree bit for bit.

A kernel is traced once per signature (shapes, strides, dtypes and device of the tensor arguments, and
the values of the others) with ``make_fx`` and compiled with ``torch._inductor.compile``; calls then go
straight to the compiled graph's runner. Going through ``torch.compile`` instead cost about 80-200 us of
guard evaluation per call, more than the whole kernel on small layers, and the wrappers that
``torch._inductor.compile`` puts around the runner about 5 us more.

Compilation is on by default. ``MODE_COMPILE=0`` in the environment (or :func:`set_compile`) switches
it off; a compiler that fails is reported once with a warning and the eager function is used from then
on. :func:`compile_seconds` reports the time spent compiling each function.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, cast

import torch

_enabled = os.environ.get("MODE_COMPILE", "1") not in ("0", "false", "False", "no")
_compile_seconds: dict[str, float] = {}
#: Compiled signatures kept per function (least recently used dropped first).
CACHE_SIZE = 32
#: Inductor options: a scalar loop. Without AVX-512, inductor's vectorised int64 code emulates 64-bit
#: multiplies, shifts and conversions lane by lane and ran 1.5-2.5x slower (measured on an AVX2 EPYC).
OPTIONS = {"cpp.simdlen": 1}


def set_compile(enabled: bool) -> bool:
    """Switch fused compilation on or off for later calls; returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    return previous


@contextlib.contextmanager
def compiling(enabled: bool) -> Iterator[None]:
    """:func:`set_compile` ``(enabled)`` for the duration of a ``with`` block, then the previous setting."""
    previous = set_compile(enabled)
    try:
        yield
    finally:
        set_compile(previous)


def compile_enabled() -> bool:
    """Whether fused kernels are compiled (``MODE_COMPILE`` and :func:`set_compile`)."""
    return _enabled


def compile_seconds() -> dict[str, float]:
    """Seconds spent tracing and compiling each fused function so far (all its signatures)."""
    return dict(_compile_seconds)


def _signature(args) -> tuple:
    return tuple(
        (a.shape, a.stride(), a.dtype, a.device) if isinstance(a, torch.Tensor) else ("static", a)
        for a in args
    )


def _build(fn, args):
    """Trace ``fn`` with its non-tensor arguments fixed and compile the graph for these tensors."""
    from torch._inductor import compile as inductor_compile
    from torch.fx.experimental.proxy_tensor import make_fx

    slots = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    # Distinct copies: a tensor passed in two slots would otherwise be traced as one input, and the
    # kernel would read that slot twice in every later call.
    tensors = [args[i].clone() for i in slots]

    def bound(*given):
        full = list(args)
        for i, t in zip(slots, given, strict=True):
            full[i] = t
        return fn(*full)

    graph = make_fx(bound)(*tensors)
    return _unwrapped(inductor_compile(graph, tensors, options=OPTIONS), tensors)


def _unwrapped(compiled, tensors):
    """The compiled graph's own runner (``current_callable``, which takes its inputs as a list), without
    the ahead-of-time-autograd and dynamo wrappers around it: they cost about 5 us a call, a quarter of a
    small layer's kernel (2048 coordinates). Taken only if it returns and writes what the wrapped function
    does on copies of ``tensors``; else ``compiled`` itself."""
    runner = getattr(compiled, "current_callable", None)
    if runner is None:
        return compiled
    wrapped_inputs, direct_inputs = [t.clone() for t in tensors], [t.clone() for t in tensors]
    expected, got = compiled(*wrapped_inputs), runner(list(direct_inputs))
    single = isinstance(expected, torch.Tensor)  # the wrapper unpacks a graph's lone output
    expected = [expected] if single else list(expected)
    same = len(expected) == len(got) and all(
        torch.equal(a, b) for a, b in zip([*expected, *wrapped_inputs], [*got, *direct_inputs], strict=False)
    )
    if not same:
        return compiled
    if single:
        return lambda *given: runner(list(given))[0]
    return lambda *given: runner(list(given))


def fused(fn):
    """Decorate a pure tensor function: compiled per signature when enabled, else (or if compiling
    fails) eager. The eager function stays available as ``.eager``."""
    cache: OrderedDict = OrderedDict()
    failed = False

    @functools.wraps(fn)
    def call(*args):
        nonlocal failed
        if not _enabled or failed:
            return fn(*args)
        key = _signature(args)
        kernel = cache.get(key)
        if kernel is None:
            start = time.perf_counter()
            try:
                kernel = _build(fn, args)
            except Exception as error:  # any compiler failure: the eager function is exact too
                failed = True
                warnings.warn(
                    f"compiling {fn.__name__} failed ({type(error).__name__}: {error}); using the eager "
                    "kernels (same results, slower). Set MODE_COMPILE=0 to skip compilation.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return fn(*args)
            _compile_seconds[fn.__name__] = _compile_seconds.get(fn.__name__, 0.0) + (
                time.perf_counter() - start
            )
            cache[key] = kernel
            if len(cache) > CACHE_SIZE:
                cache.popitem(last=False)
        else:
            cache.move_to_end(key)
        out = kernel(*(a for a in args if isinstance(a, torch.Tensor)))
        return tuple(out) if isinstance(out, list) else out

    # Functions take attributes; functools.wraps' stub declares none.
    cast(Any, call).eager = fn
    return call
