"""Hostile inputs to ``MomentumNet``: each either computes what autograd computes or fails at once with an
error that names the block or argument and the remedy."""

import pytest
import torch

from mode.nn import MomentumNet, ReconstructionError

MODES = ("autograd", "checkpoint", "reversible")
RECOMPUTING = ("checkpoint", "reversible")
D = torch.float64


def assert_same(got, want):
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("x_requires_grad", [True, False])
def test_leaves_captured_by_a_closure_get_gradients_in_every_mode(x_requires_grad):
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 4).to(D)
    scale = torch.tensor(0.7, dtype=D, requires_grad=True)
    x = torch.randn(3, 4, dtype=D, requires_grad=x_requires_grad)
    grads = {}
    for backprop in MODES:
        net = MomentumNet([lambda x: torch.tanh(lin(x)) * scale] * 3, gamma=0.9, backprop=backprop)
        lin.zero_grad()
        scale.grad = x.grad = None
        net(x).sin().sum().backward()
        grads[backprop] = [lin.weight.grad, lin.bias.grad, scale.grad] + ([x.grad] if x_requires_grad else [])
        assert all(g is not None for g in grads[backprop]), backprop
    for backprop in RECOMPUTING:
        assert_same(grads[backprop], grads["autograd"])


def test_autograd_grad_through_captured_leaves_leaves_grad_alone():
    torch.manual_seed(1)
    lin = torch.nn.Linear(4, 4).to(D)
    x = torch.randn(3, 4, dtype=D)
    got = {}
    for backprop in ("autograd", "reversible"):
        net = MomentumNet([lambda x: torch.tanh(lin(x))] * 2, gamma=0.5, backprop=backprop)
        got[backprop] = torch.autograd.grad(net(x).square().sum(), [lin.weight])
    assert_same(got["reversible"], got["autograd"])
    assert lin.weight.grad is None


def test_a_captured_tensor_computed_outside_is_refused_in_reversible_and_works_as_an_argument():
    torch.manual_seed(2)
    w = torch.randn(4, dtype=D, requires_grad=True)
    cond = w.exp()  # not a leaf: the reversible backward could not pass it its gradient
    x = torch.randn(3, 4, dtype=D)
    with pytest.raises(
        ValueError, match="block 0 uses a tensor .* computed before .* Pass it as an argument"
    ):
        MomentumNet([lambda x: torch.tanh(x * cond)] * 2, gamma=0.5)(x)
    grads = {}
    for backprop in MODES:
        net = MomentumNet([lambda x, c: torch.tanh(x * c)] * 2, gamma=0.5, backprop=backprop)
        grads[backprop] = torch.autograd.grad(net(x, w.exp()).sum(), [w])
    for backprop in RECOMPUTING:
        assert_same(grads[backprop], grads["autograd"])


def test_autocast_weight_casts_of_earlier_layers_are_not_outside_tensors():
    torch.manual_seed(3)
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = MomentumNet([lambda x: torch.tanh(lin(x))] * 3, gamma=0.9)(x)
    out.float().sum().backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


@pytest.mark.parametrize("backprop", RECOMPUTING)
def test_a_non_deterministic_block_is_refused_by_the_recomputing_modes(backprop):
    calls = []
    lin = torch.nn.Linear(4, 4).to(D)

    def counted(x):
        calls.append(None)
        return torch.tanh(lin(x)) * (1 + 1e-3 * len(calls))

    net = MomentumNet([counted] * 3, gamma=0.9, backprop=backprop)
    with pytest.raises(ReconstructionError, match="backprop='autograd'") as error:
        net(torch.randn(2, 4, dtype=D, requires_grad=True)).sum().backward()
    assert "backprop='checkpoint'" not in str(error.value)


def test_functional_call_substitutes_the_parameters_in_every_mode():
    torch.manual_seed(4)
    x = torch.randn(3, 4, dtype=D)
    grads = {}
    for backprop in MODES:
        torch.manual_seed(5)
        net = MomentumNet([torch.nn.Linear(4, 4).to(D) for _ in range(4)], gamma=0.9, backprop=backprop)
        own = {k: v.detach().clone() for k, v in net.named_parameters()}
        params = {k: torch.randn_like(v).requires_grad_() for k, v in net.named_parameters()}
        out = torch.func.functional_call(net, params, (x,))
        grads[backprop] = torch.autograd.grad(out.sin().sum(), list(params.values()))
        for k, v in net.named_parameters():  # the module's own weights are neither used nor trained
            assert torch.equal(v, own[k]) and v.grad is None
    for backprop in RECOMPUTING:
        assert_same(grads[backprop], grads["autograd"])


@pytest.mark.parametrize("backprop", MODES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_a_block_changing_its_input_in_place_is_refused(backprop, requires_grad):
    def add(x):
        x.add_(1)
        return x * 0

    lin = torch.nn.Linear(4, 4).to(D)

    def mul(x):
        x.mul_(2)
        return torch.tanh(lin(x))

    x = torch.randn(2, 4, dtype=D)
    for block in (add, mul):
        net = MomentumNet([torch.nn.Tanh(), block], gamma=0.9, backprop=backprop)
        with pytest.raises(ValueError, match="block 1 modified its input x in place"):
            net(x.clone().requires_grad_(requires_grad))


@pytest.mark.parametrize("backprop", MODES)
def test_output_dtypes(backprop):
    """A wider output is refused in every mode; a narrower one (autocast) keeps the input's dtype."""
    net = MomentumNet([lambda x: x.double().sin()], gamma=0.9, backprop=backprop)
    with pytest.raises(TypeError, match="block 0 returned torch.float64 for a torch.float32 input"):
        net(torch.randn(2, 4))
    net = MomentumNet([lambda x: x.sin().bfloat16()], gamma=0.9, backprop=backprop)
    assert net(torch.randn(2, 4)).dtype == torch.float32
    net = MomentumNet([lambda x: x.long()], gamma=0.9, backprop=backprop)
    with pytest.raises(TypeError, match="block 0 returned torch.int64"):
        net(torch.randn(2, 4))


def test_double_backward_and_func_transforms_name_the_mode_that_supports_them():
    net = MomentumNet([torch.nn.Linear(4, 4).to(D)] * 2, gamma=0.9)
    x = torch.randn(2, 4, dtype=D, requires_grad=True)
    with pytest.raises(RuntimeError, match="create_graph=True.*backprop='autograd'"):
        torch.autograd.grad(net(x).square().sum(), x, create_graph=True)
    for transform in (torch.func.vmap, torch.func.jacrev):
        with pytest.raises(RuntimeError, match="torch.func transforms.*backprop='autograd'"):
            transform(net)(torch.randn(2, 4, dtype=D))
    net.backprop = "autograd"
    (g,) = torch.autograd.grad(net(x).square().sum(), x, create_graph=True)
    g.sum().backward()
    assert torch.func.jacrev(net)(torch.randn(2, 4, dtype=D)).shape == (2, 4, 2, 4)


def test_eval_between_forward_and_backward_leaves_the_gradients_unchanged():
    x = torch.randn(5, 4, dtype=D, requires_grad=True)
    grads = {}
    for backprop in MODES:
        torch.manual_seed(6)
        blocks = [torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5)).to(D) for _ in range(3)]
        net = MomentumNet(blocks, gamma=0.9, backprop=backprop)
        out = net(x)
        net.eval()
        grads[backprop] = torch.autograd.grad(out.sum(), [x, *net.parameters()])
        assert not any(m.training for m in net.modules())  # the replay's flags were put back
    for backprop in RECOMPUTING:
        assert_same(grads[backprop], grads["autograd"])


@pytest.mark.parametrize("backprop", RECOMPUTING)
def test_a_parameter_changed_before_backward_is_named(backprop):
    blocks = [torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh()).to(D) for _ in range(3)]
    net = MomentumNet(blocks, gamma=0.9, backprop=backprop)
    out = net(torch.randn(2, 4, dtype=D, requires_grad=True))
    with torch.no_grad():
        blocks[1][0].weight.add_(0.1)
    with pytest.raises(ReconstructionError, match=r"parameter 0\.weight of block 1 was changed in place"):
        out.sum().backward()


@pytest.mark.parametrize("backprop", MODES)
def test_a_block_moving_x_to_another_device_is_named(backprop):
    net = MomentumNet([torch.nn.Tanh(), lambda x: x.to("meta")], gamma=0.9, backprop=backprop)
    with pytest.raises(ValueError, match="block 1 returned a tensor on meta for an input on cpu"):
        net(torch.randn(2, 4))


@pytest.mark.parametrize("backprop", ("autograd", "checkpoint"))
def test_inference_mode_inputs_skip_the_version_check(backprop):
    net = MomentumNet([torch.nn.Linear(4, 4)] * 2, gamma=0.9, backprop=backprop)
    with torch.inference_mode():
        assert net(torch.randn(2, 4)).shape == (2, 4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"gamma": 0.5, "gamma_bits": True}, TypeError, "gamma_bits must be None or an int"),
        ({"gamma": 0.5, "gamma_bits": 3.0}, TypeError, "gamma_bits must be None or an int"),
        ({"gamma": 0.5, "gamma_bits": 99}, ValueError, r"gamma_bits must be an int in \[0, 55\]"),
        ({"gamma": 0.5, "frac_bits": True}, TypeError, "frac_bits"),
        ({"gamma": 1.0}, ValueError, r"gamma must lie in \[0, 1\)"),
        ({"gamma": True}, TypeError, "gamma must be a real number"),
        ({"eps": -1.0}, ValueError, "eps must be >= 0"),
        ({"gamma": 0.5, "eps": 2.0}, ValueError, "exactly one of gamma and eps, got both"),
        ({}, ValueError, "exactly one of gamma and eps, got neither"),
        ({"gamma": 0.5, "backprop": "adjoint"}, ValueError, "backprop must be one of"),
        ({"gamma": 0.5, "backprop": ["reversible"]}, ValueError, "backprop must be one of"),
        ({"gamma": 0.5, "segments": True}, TypeError, "segments must be an integer"),
        ({"gamma": 0.5, "segments": 0}, ValueError, "segments must be an integer >= 1"),
        ({"gamma": 0.5, "step": True}, TypeError, "step must be a real number"),
        ({"gamma": 0.5, "step": 0}, ValueError, "step must be > 0"),
        ({"gamma": 0.5, "gamma_rel_tol": True}, TypeError, "gamma_rel_tol must be a real number"),
        ({"gamma": 0.5, "gamma_rel_tol": "a"}, TypeError, "gamma_rel_tol must be a real number"),
        ({"gamma": 0.5, "gamma_rel_tol": -1.0}, ValueError, r"gamma_rel_tol must lie in \[0, 1\)"),
        ({"gamma": 0.5, "gamma_rel_tol": float("nan")}, ValueError, "gamma_rel_tol must be finite"),
        ({"gamma": 0.5, "v0": 3}, TypeError, "v0 must be None, a Tensor or an nn.Module"),
    ],
)
def test_argument_errors_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        MomentumNet([torch.nn.Identity()] * 4, **kwargs)


@pytest.mark.parametrize(
    ("blocks", "error", "match"),
    [
        ([], ValueError, r"len\(blocks\) must be an integer >= 1"),
        (torch.nn.Linear(2, 2), TypeError, "blocks must be a list"),
        ([1], TypeError, "blocks\\[0\\] is not callable"),
    ],
)
def test_block_errors_name_the_block(blocks, error, match):
    with pytest.raises(error, match=match):
        MomentumNet(blocks, gamma=0.5)


class Unregistered(torch.nn.Module):
    """Keeps its weight outside the module's parameters (a plain attribute)."""

    def __init__(self, w):
        super().__init__()
        self.__dict__["w"] = w

    def forward(self, x):
        return torch.tanh(x @ self.w)


def test_captured_input_and_unregistered_tensors_get_gradients():
    torch.manual_seed(7)
    w = torch.randn(4, 4, dtype=D, requires_grad=True)
    x = torch.randn(3, 4, dtype=D, requires_grad=True)
    grads = {}
    for backprop in MODES:
        net = MomentumNet([Unregistered(w), lambda z: torch.tanh(z + x)] * 2, gamma=0.9, backprop=backprop)
        grads[backprop] = torch.autograd.grad(net(x).sin().sum(), [x, w])
    for backprop in RECOMPUTING:
        assert_same(grads[backprop], grads["autograd"])


def test_functional_call_with_computed_parameters_and_buffers():
    torch.manual_seed(8)
    blocks = [torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)).to(D) for _ in range(3)]
    x = torch.randn(5, 4, dtype=D)
    base = {k: torch.randn_like(v).requires_grad_() for k, v in blocks[0].named_parameters()}
    grads = {}
    for backprop in MODES:
        net = MomentumNet(blocks, gamma=0.9, backprop=backprop).eval()
        params = {f"blocks.{i}.{k}": v * (i + 2) for i in range(3) for k, v in base.items()}
        buffers = {k: v + 0.5 if v.is_floating_point() else v for k, v in net.named_buffers()}
        out = torch.func.functional_call(net, {**params, **buffers}, (x,))
        grads[backprop] = torch.autograd.grad(out.sin().sum(), list(base.values()))
    for backprop in RECOMPUTING:
        assert_same(grads[backprop], grads["autograd"])


class Rewrites(torch.nn.Linear):
    """Rewrites its weight in place (same values) in its first call, as cuDNN RNNs flatten theirs."""

    def forward(self, x):
        if not getattr(self, "flat", False):
            with torch.no_grad():
                self.weight.mul_(1.0)
            self.flat = True
        return torch.tanh(super().forward(x))


@pytest.mark.parametrize("backprop", RECOMPUTING)
def test_a_parameter_rewritten_by_the_forward_itself_is_no_change(backprop):
    x = torch.randn(3, 4, dtype=D, requires_grad=True)
    grads = []
    for b in (backprop, "autograd"):
        torch.manual_seed(9)
        block = Rewrites(4, 4).to(D)
        net = MomentumNet([block] * 3, gamma=0.9, backprop=b)
        grads.append(torch.autograd.grad(net(x).sum(), [x, block.weight]))
    assert_same(*grads)
