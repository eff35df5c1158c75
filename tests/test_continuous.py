import pytest
import torch

import mode


class Field(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(3, 3).double()

    def forward(self, x):
        return torch.tanh(self.lin(x))


@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_adjoint_gradients_match_direct_backprop_and_counts_are_split(eps):
    f = Field()
    x0 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    grads, sols = [], []
    for adjoint in (False, True):
        sol = mode.odeint(f, x0, eps=eps, rtol=1e-10, atol=1e-10, adjoint=adjoint)
        nfe_after_forward = sol.nfe_forward
        assert sol.nfe_backward == 0
        sol.x.square().sum().backward()
        grads.append((x0.grad.clone(), f.lin.weight.grad.clone()))
        x0.grad = None
        f.zero_grad()
        assert sol.nfe_forward == nfe_after_forward > 0
        sols.append(sol)
    assert sols[0].nfe_backward == 0, "direct backprop differentiates the stored evaluations"
    assert sols[1].nfe_backward > 0, "the adjoint solve evaluates f again"
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_fixed_step_methods_and_output_times():
    x0 = torch.ones(2, dtype=torch.float64)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    sol = mode.odeint(torch.sin, x0, eps=1.0, t=t, method="euler", options={"step_size": 0.25})
    assert sol.x.shape == (5, 2) and sol.v.shape == (5, 2)
    assert sol.nfe_forward == 4
    x, v = mode.integrate(torch.sin, x0, eps=1.0, steps=4, scheme="euler")
    torch.testing.assert_close((sol.x[-1], sol.v[-1]), (x, v), rtol=0, atol=1e-15)


def test_bad_times():
    with pytest.raises(ValueError, match="increasing"):
        mode.odeint(torch.sin, torch.ones(2), eps=1.0, t=torch.tensor([0.0, 0.0]))
