"""depth-limit's rate criteria fail on a network that does not tend to the ODE it is compared with.

A step 5% longer than T / L integrates to 1.05 T: the error to x_eps(T) and the gap to the NODE at T then
level off at the distance between the two times instead of falling like 1/L and eps, and both fitted rates
leave their tolerance of 1.
"""

import torch

import mode.experiments.depth_limit as depth_limit
from mode.experiments import run_experiment
from mode.nn import MomentumNet
from tests.experiments.test_experiments import REDUCED


def _overshooting_output(f, x0, depth, eps):
    net = MomentumNet([f] * depth, eps=eps, step=1.05 * depth_limit.T / depth, backprop="autograd")
    with torch.no_grad():
        return net(x0)


def test_both_rates_fail_on_a_network_integrating_past_t(monkeypatch, tmp_path):
    monkeypatch.setattr(depth_limit, "QUICK", REDUCED["depth-limit"][1])
    monkeypatch.setattr(depth_limit, "network_output", _overshooting_output)
    criteria = run_experiment("depth-limit", quick=True, seed=0, out=tmp_path)["criteria"]
    assert not any(c["passed"] for c in criteria.values()), criteria
