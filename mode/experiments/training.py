"""The one training loop the experiments share (full-batch or a fixed loss closure, Adam)."""

from __future__ import annotations

import torch


def fit(loss_fn, params, *, steps: int, lr: float, context, desc: str = "training") -> list[float]:
    """Minimise ``loss_fn()`` over ``params`` with Adam for ``steps`` steps; returns the loss history.

    ``loss_fn`` draws its own batch if it wants minibatches; the loop only differentiates and steps.
    """
    params = [p for p in params if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    history = []
    for _ in context.progress(range(steps), desc=desc):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history
