import copy

import pytest
import torch

import mode
from mode.exact import FixedPointRangeError
from mode.nn import MomentumNet, ReconstructionError

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
GAMMAS = [0.1, 0.5, 0.9, 0.99]


class Conditioned(torch.nn.Module):
    """An MLP block with a positional conditioning input and a keyword scale."""

    def __init__(self, d, hidden=16):
        super().__init__()
        self.inp = torch.nn.Linear(d, hidden)
        self.out = torch.nn.Linear(hidden, d)

    def forward(self, x, cond, *, scale):
        return self.out(torch.tanh(self.inp(x) + cond)) * scale


class ConvBlock(torch.nn.Module):
    def __init__(self, channels=3):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, channels, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.tanh(self.conv1(x)))


def relative_errors(net_kwargs, blocks, inputs, args=(), kwargs=None, v0=None):
    """Per-tensor relative gradient error of each backprop mode against autograd."""
    kwargs = kwargs or {}
    leaves = [inputs, *[a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]]
    grads = {}
    for backprop in ("autograd", "reversible", "checkpoint"):
        net = MomentumNet(blocks, backprop=backprop, v0=v0, **net_kwargs)
        net.zero_grad()
        for t in leaves:
            t.grad = None
        out, vel = net(inputs, *args, return_velocity=True, **kwargs)
        (out.sin().sum() + (vel * out).sum()).backward()
        params = [p for p in dict.fromkeys(net.parameters()) if p.requires_grad]
        grads[backprop] = [t.grad.clone() for t in leaves] + [p.grad.clone() for p in params]
    return {
        mode_: max(
            ((g - r).norm() / r.norm()).item() for g, r in zip(grads[mode_], grads["autograd"], strict=True)
        )
        for mode_ in ("reversible", "checkpoint")
    }


def mlp_case(depth, dtype, shared=False, seed=0):
    torch.manual_seed(seed)
    d = 6
    if shared:
        blocks = [Conditioned(d).to(dtype)] * depth
    else:
        blocks = [Conditioned(d).to(dtype) for _ in range(depth)]
    x = torch.randn(5, d, dtype=dtype, requires_grad=True)
    cond = torch.randn(5, 16, dtype=dtype, requires_grad=True)
    scale = torch.tensor(0.8, dtype=dtype, requires_grad=True)
    return blocks, x, (cond,), {"scale": scale}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("depth", [1, 10, 100])
def test_reversible_gradients_equal_autograd_mlp(depth, gamma, dtype):
    blocks, x, args, kwargs = mlp_case(depth, dtype)
    errors = relative_errors({"gamma": gamma}, blocks, x, args, kwargs)
    assert errors["reversible"] <= TOL[dtype], errors
    assert errors["checkpoint"] <= TOL[dtype], errors


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("depth", [1, 10])
def test_reversible_gradients_equal_autograd_conv(depth, gamma, dtype):
    torch.manual_seed(1)
    blocks = [ConvBlock().to(dtype) for _ in range(depth)]
    x = torch.randn(2, 3, 6, 6, dtype=dtype, requires_grad=True)
    errors = relative_errors({"gamma": gamma}, blocks, x)
    assert errors["reversible"] <= TOL[dtype], errors


def test_deep_shared_conv_float64():
    torch.manual_seed(2)
    blocks = [ConvBlock().double()] * 100
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    errors = relative_errors({"gamma": 0.9}, blocks, x)
    assert errors["reversible"] <= 1e-10, errors


def float64_reference_errors(depth, gamma, step, shared):
    """Relative gradient errors of float32 autograd and float32 reversible against float64 autograd on the
    same weights and inputs, and of reversible against autograd (both float32): the largest over the
    input, the extra arguments and the parameters."""
    blocks, x, args, kwargs = mlp_case(depth, torch.float32, shared=shared)
    wide = (
        [copy.deepcopy(blocks[0]).double()] * depth if shared else [copy.deepcopy(b).double() for b in blocks]
    )
    leaves = [x, *args, *kwargs.values()]
    wide_leaves = [t.detach().double().requires_grad_() for t in leaves]

    def grads(blocks, leaves, backprop):
        net = MomentumNet(blocks, gamma=gamma, step=step, backprop=backprop)
        out, vel = net(leaves[0], leaves[1], return_velocity=True, scale=leaves[2])
        params = list(dict.fromkeys(net.parameters()))
        return torch.autograd.grad(out.sin().sum() + (vel * out).sum(), [*leaves, *params])

    def error(got, want):
        return max(((g.double() - w).norm() / w.norm()).item() for g, w in zip(got, want, strict=True))

    exact = grads(wide, wide_leaves, "autograd")
    autograd, reversible = grads(blocks, leaves, "autograd"), grads(blocks, leaves, "reversible")
    return {
        "autograd": error(autograd, exact),
        "reversible": error(reversible, exact),
        "reversible_vs_autograd": error(reversible, autograd),
    }


@pytest.mark.parametrize("gamma", GAMMAS)
def test_reversible_gradients_equal_autograd_depth_1000_float64(gamma):
    """h = 0.01 as in the float32 grid. With h = 1 the dynamics grow the state into the hundreds and
    amplify perturbations ~1e5-fold, so the float64 grid 2**-44 shows at ~1e-8 (see MomentumNet's notes)."""
    blocks, x, args, kwargs = mlp_case(1000, torch.float64, shared=True)
    errors = relative_errors({"gamma": gamma, "step": 0.01}, blocks, x, args, kwargs)
    assert errors["reversible"] <= 1e-10, errors


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("gamma", GAMMAS)
def test_reversible_gradients_equal_autograd_depth_1000_float32(gamma, shared):
    """Depth 1000 with h = 0.01 (horizon 10, the ODE regime), where float32 autograd is itself accurate
    to a few 1e-6: reversible agrees with it to 1e-5 and is as close as it to the float64 gradient. Both
    are then at the level of float32 rounding in the blocks and the adjoint recursion, and which of the
    two lands closer depends on the BLAS kernels (seen: 2.0e-6 against 1.6e-6), hence the factor 2; the
    step-1 test below is where the exact state makes a difference."""
    errors = float64_reference_errors(1000, gamma, 0.01, shared)
    assert errors["reversible_vs_autograd"] <= 1e-5, errors
    assert errors["reversible"] <= 2 * errors["autograd"], errors


@pytest.mark.parametrize("gamma", GAMMAS)
def test_reversible_float32_is_at_least_as_accurate_as_autograd_at_step_1(gamma):
    """With h = 1, 1000 layers amplify float32 rounding: autograd's own gradient is off the float64 one by
    up to ~1e-3, so agreement with it to 1e-5 is not a meaningful target. The exact recursion keeps the
    state to 2**-32; its gradient is closer to the float64 one than autograd's."""
    errors = float64_reference_errors(1000, gamma, 1.0, shared=True)
    assert errors["reversible"] <= errors["autograd"], errors


@pytest.mark.parametrize("gamma", [0.5, 0.9])
def test_inverse_is_bit_exact_at_depth_10000(gamma):
    torch.manual_seed(3)
    lin = torch.nn.Linear(4, 4)
    net = MomentumNet([lambda x: torch.tanh(lin(x))] * 10_000, gamma=gamma)
    x0 = torch.randn(8, 4)
    with torch.no_grad():
        x, v = net(x0, return_velocity=True)
    assert not torch.equal(x, x0)
    x_rec, v_rec = net.inverse(x, v)
    assert torch.equal(x_rec, x0)
    assert torch.equal(v_rec, torch.zeros_like(x0))


def test_float_inverse_of_the_same_net_is_not_exact():
    """The reason for the bit stack: float64 reversal at gamma = 0.5 loses everything by depth 100."""
    torch.manual_seed(3)
    lin = torch.nn.Linear(4, 4).double()
    f = lambda x: torch.tanh(lin(x))  # noqa: E731
    net = MomentumNet([f] * 100, gamma=0.5, backprop="autograd")
    x0 = torch.randn(8, 4, dtype=torch.float64)
    with torch.no_grad():
        x, v = net(x0, return_velocity=True)
        for _ in range(100):
            x, v = mode.SCHEMES["momentum"].inverse(f, x, v, 0.0, 1.0, net.eps)
    assert (x - x0).abs().max() > 1e-3


def test_inverse_after_backward_and_bad_calls():
    blocks, x, args, kwargs = mlp_case(5, torch.float64)
    net = MomentumNet(blocks, gamma=0.9, v0=torch.nn.Linear(6, 6).double())
    out, vel = net(x, *args, return_velocity=True, **kwargs)
    out.sum().backward()
    x_rec, v_rec = net.inverse(out, vel)
    assert torch.equal(x_rec, x.detach())
    assert torch.equal(v_rec, net.v0(x).detach())
    with pytest.raises(ValueError, match="last forward"):
        net.inverse(out.detach().clone(), vel)
    with pytest.raises(ValueError, match="reversible"):
        MomentumNet(blocks, gamma=0.9, backprop="autograd").inverse(out, vel)


def test_all_modes_compute_the_same_function():
    blocks, x, args, kwargs = mlp_case(50, torch.float64)
    outs = [
        MomentumNet(blocks, gamma=0.9, backprop=b)(x, *args, **kwargs) for b in ("autograd", "reversible")
    ]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-11)


def test_effective_gamma_is_an_exact_dyadic_rational_close_to_gamma():
    for gamma in GAMMAS + [0.999]:
        net = MomentumNet([torch.nn.Identity()], gamma=gamma)
        assert net.gamma_effective == net.n / 2**net.k
        assert abs((1 - net.gamma_effective) - (1 - gamma)) <= 1e-9 * (1 - gamma)


def test_gamma_bits_fixes_the_denominator_in_every_mode():
    blocks, x, args, kwargs = mlp_case(20, torch.float64)
    net = MomentumNet(blocks, gamma=0.9, gamma_bits=10)
    assert (net.n, net.k) == (461, 9) and net.gamma_effective == round(0.9 * 1024) / 1024
    errors = relative_errors({"gamma": 0.9, "gamma_bits": 10}, blocks, x, args, kwargs)
    assert errors["reversible"] <= 1e-10, errors
    with pytest.raises(ValueError, match="gamma_bits"):
        MomentumNet(blocks, gamma=0.9, gamma_bits=60)
    with pytest.raises(ValueError, match="rounds to 1"):
        MomentumNet(blocks, gamma=0.999, gamma_bits=3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scheme", ["momentum", "exp-momentum"])
def test_eps_form_is_the_momentum_scheme_bit_for_bit(dtype, scheme):
    """One owner of the step: with default settings MomentumNet(eps=...) and integrate(scheme=...) use the
    same exact gamma and the same float operations, so autograd and checkpoint agree bitwise; the
    reversible mode agrees to the precision of its grid."""
    torch.manual_seed(4)
    f = torch.nn.Linear(3, 3).to(dtype)
    eps, T, depth = 0.5, 1.0, 20
    x0 = torch.randn(2, 3, dtype=dtype)
    x_int, v_int = mode.integrate(f, x0, eps=eps, T=T, steps=depth, scheme=scheme)
    rule = mode.SCHEMES[scheme].coefficients(T / depth, eps)
    gamma = {"eps": eps} if scheme == "momentum" else {"gamma": rule.gamma}
    for backprop in ("autograd", "checkpoint"):
        net = MomentumNet([f] * depth, step=T / depth, backprop=backprop, **gamma)
        assert net.gamma_effective == rule.gamma
        x_net, v_net = net(x0, return_velocity=True)
        assert torch.equal(x_net, x_int) and torch.equal(v_net, v_int), backprop
    rev = MomentumNet([f] * depth, step=T / depth, **gamma)
    # Both round at every layer (the float loop to the dtype, the exact one to its finer grid).
    scale = x_int.abs().max().item()
    torch.testing.assert_close(rev(x0), x_int, rtol=0, atol=depth * torch.finfo(dtype).eps * scale)


def test_gamma_zero_is_the_resnet_and_has_no_reversible_mode():
    torch.manual_seed(5)
    blocks = [torch.nn.Linear(3, 3) for _ in range(4)]
    x = torch.randn(2, 3)
    expected = x
    for b in blocks:
        expected = expected + b(expected)
    for backprop in ("autograd", "checkpoint"):
        torch.testing.assert_close(
            MomentumNet(blocks, gamma=0, backprop=backprop)(x), expected, rtol=0, atol=0
        )
    with pytest.raises(ValueError, match="no inverse"):
        MomentumNet(blocks, gamma=0)


class BatchNormBlock(torch.nn.Module):
    def __init__(self, d=5):
        super().__init__()
        self.lin = torch.nn.Linear(d, d)
        self.bn = torch.nn.BatchNorm1d(d)

    def forward(self, x):
        return torch.tanh(self.bn(self.lin(x)))


@pytest.mark.parametrize("backprop", ["reversible", "checkpoint"])
def test_batchnorm_running_statistics_updated_once(backprop):
    torch.manual_seed(6)
    reference = [BatchNormBlock().double() for _ in range(6)]
    twin = [BatchNormBlock().double() for _ in range(6)]
    for a, b in zip(reference, twin, strict=True):
        b.load_state_dict(a.state_dict())
    x = torch.randn(16, 5, dtype=torch.float64, requires_grad=True)
    y = x.detach().clone().requires_grad_(True)
    MomentumNet(reference, gamma=0.9, backprop="autograd")(x).square().sum().backward()
    MomentumNet(twin, gamma=0.9, backprop=backprop)(y).square().sum().backward()
    for a, b in zip(reference, twin, strict=True):
        assert int(b.bn.num_batches_tracked) == 1
        torch.testing.assert_close(b.bn.running_mean, a.bn.running_mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(b.bn.running_var, a.bn.running_var, rtol=0, atol=1e-12)
        torch.testing.assert_close(b.lin.weight.grad, a.lin.weight.grad, rtol=1e-10, atol=0)
    torch.testing.assert_close(y.grad, x.grad, rtol=1e-10, atol=0)


@pytest.mark.parametrize("backprop", ["reversible", "checkpoint"])
def test_dropout_replays_the_same_masks(backprop):
    torch.manual_seed(7)
    blocks = [
        torch.nn.Sequential(torch.nn.Linear(5, 5), torch.nn.Dropout(0.3), torch.nn.Tanh()).double()
        for _ in range(8)
    ]
    x = torch.randn(10, 5, dtype=torch.float64, requires_grad=True)
    grads, next_draw = [], []
    for b in ("autograd", backprop):
        x.grad = None
        for blk in blocks:
            blk.zero_grad()
        torch.manual_seed(123)
        MomentumNet(blocks, gamma=0.9, backprop=b)(x).square().sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for blk in blocks for p in blk.parameters()])
        next_draw.append(torch.rand(1))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=0)
    # the backward's replay leaves the global generator where the forward left it
    assert torch.equal(next_draw[0], next_draw[1])


def test_frozen_parameters_and_parameter_v0():
    torch.manual_seed(8)
    blocks = [torch.nn.Linear(4, 4).double() for _ in range(5)]
    for p in blocks[2].parameters():
        p.requires_grad_(False)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    v0 = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    errors = relative_errors({"gamma": 0.9}, blocks, x, v0=v0)
    assert errors["reversible"] <= 1e-10
    assert blocks[2].weight.grad is None


def test_float32_under_float64_blocks_is_refused_for_half_inputs():
    net = MomentumNet([torch.nn.Identity()], gamma=0.5)
    with pytest.raises(TypeError, match="float32 or float64"):
        net(torch.zeros(2, dtype=torch.float16))


def test_shape_changing_block_is_refused():
    net = MomentumNet([torch.nn.Linear(4, 3)], gamma=0.5)
    with pytest.raises(ValueError, match="preserve the shape"):
        net(torch.zeros(2, 4))


@pytest.mark.parametrize("bad", [-0.5, 1.0, 2.0])
def test_gamma_outside_range(bad):
    with pytest.raises(ValueError, match=r"gamma must lie in \[0, 1\)"):
        MomentumNet([torch.nn.Identity()], gamma=bad)


def test_parameter_errors():
    with pytest.raises(ValueError, match="exactly one of gamma and eps"):
        MomentumNet([torch.nn.Identity()], gamma=0.5, eps=1.0)
    with pytest.raises(ValueError, match="backprop"):
        MomentumNet([torch.nn.Identity()], gamma=0.5, backprop="adjoint")
    with pytest.raises(ValueError, match="len\\(blocks\\)"):
        MomentumNet([], gamma=0.5)
    with pytest.raises(TypeError, match="frac_bits"):  # the grid is relative now: no absolute grid to set
        MomentumNet([torch.nn.Identity()], gamma=0.5, frac_bits=32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_beyond_the_dtype_range_raise(dtype):
    """The exact arithmetic covers the dtype's range (a quarter of its largest value) at relative
    precision, and refuses values beyond it or non-finite ones instead of wrapping."""
    limit = torch.finfo(dtype).max / 4
    net = MomentumNet([torch.nn.Identity()], gamma=0.5)
    assert torch.isfinite(net(torch.full((2,), limit / 8, dtype=dtype))).all()
    with pytest.raises(FixedPointRangeError, match="quarter of the largest"):
        net(torch.full((2,), limit * 2, dtype=dtype))
    growing = MomentumNet([lambda x: 1e3 * x] * 200, gamma=0.5)
    with pytest.raises(FixedPointRangeError, match="not finite or beyond the range"):
        growing(torch.ones(3, dtype=dtype))
    with pytest.raises(FixedPointRangeError, match="not finite"):
        MomentumNet([lambda x: x / 0.0], gamma=0.5)(torch.ones(3, dtype=dtype))


def test_non_deterministic_block_is_detected():
    noise = torch.Generator().manual_seed(0)  # a private generator the replay cannot restore
    net = MomentumNet([lambda x: x + torch.rand(x.shape, generator=noise)] * 3, gamma=0.9)
    x = torch.randn(4, requires_grad=True)
    with pytest.raises(ReconstructionError, match="deterministic"):
        net(x).sum().backward()


def test_parameter_gradients_reach_grad_layer_by_layer():
    """Each layer's gradients land in .grad before the backward rebuilds the layer below it, so no copy
    of all parameter gradients is held at once (the memory that made activations grow with L)."""
    torch.manual_seed(9)
    blocks = [torch.nn.Linear(4, 4).double() for _ in range(6)]
    net = MomentumNet(blocks, gamma=0.9)
    calls = [0] * len(blocks)
    order = []
    for i, block in enumerate(blocks):
        block.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
        block.weight.register_post_accumulate_grad_hook(lambda p, i=i: order.append((i, list(calls))))
    net(torch.randn(3, 4, dtype=torch.float64, requires_grad=True)).sum().backward()
    assert [i for i, _ in order] == [5, 4, 3, 2, 1, 0]
    for i, seen in order:
        assert seen == [1] * i + [2] * (6 - i)  # blocks below i not yet re-evaluated by the backward


def test_shared_block_gradient_is_accumulated_once_and_autograd_grad_works():
    torch.manual_seed(10)
    block = torch.nn.Linear(4, 4).double()
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    calls = []
    block.weight.register_post_accumulate_grad_hook(lambda p: calls.append(p.grad.clone()))
    nets = {b: MomentumNet([block] * 7, gamma=0.5, backprop=b) for b in ("autograd", "reversible")}
    grads = {b: torch.autograd.grad(net(x).square().sum(), [x, block.weight]) for b, net in nets.items()}
    for got, want in zip(grads["reversible"], grads["autograd"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=0)
    assert block.weight.grad is None and not calls  # autograd.grad leaves .grad alone
    nets["reversible"](x).square().sum().backward()
    assert len(calls) == 1  # one accumulation of the summed gradient: DDP's ready-once hooks hold
    torch.testing.assert_close(calls[0], grads["autograd"][1], rtol=1e-10, atol=0)


def test_the_record_lives_with_the_output_not_the_module():
    """Between training steps the module holds no bit stack, integer state or saved buffers."""
    import gc
    import weakref

    net = MomentumNet([torch.nn.Linear(4, 4).double() for _ in range(3)], gamma=0.9)
    out = net(torch.randn(2, 4, dtype=torch.float64))
    assert net.bit_stack is not None and len(net.bit_stack) >= 3  # a multiply per layer, plus exponent moves
    record = weakref.ref(net.bit_stack)
    out.sum().backward()
    assert len(net.bit_stack) == 0
    del out
    gc.collect()
    assert record() is None and net.bit_stack is None


def test_second_backward_through_a_retained_graph_is_refused():
    net = MomentumNet([torch.nn.Linear(4, 4).double() for _ in range(3)], gamma=0.9)
    loss = net(torch.randn(2, 4, dtype=torch.float64)).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass per forward"):
        loss.backward()


def test_inverse_refuses_an_input_modified_in_place():
    """The input's bits below the grid come from the input itself, which the record references."""
    net = MomentumNet([torch.nn.Linear(4, 4).double() for _ in range(3)], gamma=0.9)
    x0 = torch.randn(2, 4, dtype=torch.float64)
    x, v = net(x0, return_velocity=True)
    x0.mul_(2)
    with pytest.raises(ValueError, match="modified in place"):
        net.inverse(x, v)
