r"""Continuous-time neural ODE models of the literature, behind one interface.

Every model is an ``nn.Module`` built as ``Model(field, *, T=1.0, method="dopri5", rtol=1e-7, atol=1e-9,
options=None, backprop="autograd", readout=None, ...)`` whose ``forward(x)`` returns a
:class:`~mode.models.base.ModelOutput` ``(prediction, state, nfe_forward)`` and whose ``nfe_backward``
counts the function evaluations of the last backward pass (0 with ``backprop="autograd"``).

=============================  ===================================================================
:class:`.NODE`                 :math:`\dot h = f(h, t)` (Chen et al., 2018)
:class:`.ANODE`                :math:`\dot z = f(z, t)`, :math:`z(0) = [x; 0]` (Dupont et al., 2019)
:class:`.SONODE`               :math:`\ddot x = f(x, \dot x, t)` (Norcliffe et al., 2020)
:class:`.HBNODE`               :math:`\ddot h + \gamma \dot h = f(h, t) - \xi h` (Xia et al., 2021)
:class:`.GHBNODE`              :math:`\dot h = \sigma(m)`, :math:`\dot m = -\gamma m + f(h, t) - \xi h`
:class:`.MomentumODE`          :math:`\varepsilon \ddot x + \dot x = f(x, t)` (Sander et al., 2021)
=============================  ===================================================================
"""

from mode.models.base import ContinuousModel, CountingDynamics, ModelOutput
from mode.models.first_order import ANODE, NODE
from mode.models.heavy_ball import GHBNODE, HBNODE
from mode.models.second_order import SONODE, MomentumODE

__all__ = [
    "ANODE",
    "GHBNODE",
    "HBNODE",
    "NODE",
    "SONODE",
    "ContinuousModel",
    "CountingDynamics",
    "ModelOutput",
    "MomentumODE",
]
