"""``mode.compat.momentumnet`` runs code written for the official ``momentumnet`` 0.10.

The behaviours of the official package's own test suite and README examples, rewritten against the
compatibility module; equality with the official package where it is right (autograd mode), the fixes
where it is not (reversible gradients, BatchNorm statistics, keyword arguments), and its checkpoints
loading through the key translation.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import mode
import mode.compat.momentumnet as momentumnet

DTYPE = torch.float64


def _mlps(n, d=3, hidden=5, seed=0):
    torch.manual_seed(seed)
    return [nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, d)).to(DTYPE) for _ in range(n)]


def _grads(net, x, *args):
    x = x.detach().requires_grad_(True)
    out = net(x, *args)
    loss = (out**2 + out**3).sum()
    return out, torch.autograd.grad(loss, (x, *net.parameters()))


# ---------------------------------------------------------------- the official suite's behaviours


@pytest.mark.parametrize("use_backprop", [True, False])
def test_output_has_the_input_shape_and_a_shape_changing_function_raises(use_backprop):
    function = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 3))
    x = torch.rand(3)
    assert momentumnet.MomentumNet([function], gamma=0.9, use_backprop=use_backprop)(x).shape == x.shape
    wrong = nn.Sequential(nn.Linear(3, 4), nn.Linear(3, 3))
    with pytest.raises(RuntimeError):
        momentumnet.MomentumNet([wrong], gamma=0.9, use_backprop=use_backprop)(x)


@pytest.mark.parametrize("init_speed", [True, False])
@pytest.mark.parametrize("is_residual", [True, False])
def test_memory_free_mode_gives_autograds_outputs_and_gradients(init_speed, is_residual):
    functions = _mlps(8)
    init = _mlps(1, seed=1)[0] if init_speed else None
    nets = [
        momentumnet.MomentumNet(
            functions,
            gamma=0.99,
            init_speed=init_speed,
            init_function=init,
            use_backprop=use_backprop,
            is_residual=is_residual,
        )
        for use_backprop in (True, False)
    ]
    x = torch.rand(4, 3, dtype=DTYPE)
    (out_a, grads_a), (out_r, grads_r) = (_grads(net, x) for net in nets)
    torch.testing.assert_close(out_r, out_a, rtol=1e-12, atol=1e-14)
    for a, r in zip(grads_a, grads_r, strict=True):
        torch.testing.assert_close(r, a, rtol=1e-10, atol=1e-13)


class _TwoInputs(nn.Module):
    def __init__(self, d_mem):
        super().__init__()
        self.layer1, self.layer2 = nn.Linear(3, 3, dtype=DTYPE), nn.Linear(d_mem, 3, dtype=DTYPE)

    def forward(self, x, mem):
        return self.layer1(x) + self.layer2(mem)


@pytest.mark.parametrize("init_speed", [True, False])
def test_extra_positional_inputs_reach_every_function_and_get_gradients(init_speed):
    torch.manual_seed(2)
    functions = [_TwoInputs(2) for _ in range(3)]
    init = nn.Tanh() if init_speed else None
    x0, mem0 = torch.randn(10, 3, dtype=DTYPE), torch.randn(10, 2, dtype=DTYPE)
    grads = []
    for use_backprop in (True, False):
        net = momentumnet.MomentumNet(
            functions, gamma=0.9, init_speed=init_speed, init_function=init, use_backprop=use_backprop
        )
        net.zero_grad()
        x, mem = x0.clone().requires_grad_(True), mem0.clone().requires_grad_(True)
        (net(x, mem) ** 2).sum().backward()
        grads.append((x.grad, mem.grad, *[p.grad for p in net.parameters()]))
    for a, r in zip(*grads, strict=True):
        torch.testing.assert_close(r, a, rtol=1e-10, atol=1e-13)


def test_batchnorm_functions_in_eval_mode_agree_across_modes():
    torch.manual_seed(3)
    bn = nn.Sequential(*[nn.BatchNorm2d(3, dtype=DTYPE) for _ in range(10)])
    for layer in bn:
        layer.running_mean.uniform_(-0.5, 0.5)
        layer.running_var.uniform_(0.5, 2.0)
    nets = [momentumnet.MomentumNet(bn, gamma=0.9, use_backprop=b).eval() for b in (True, False)]
    x = torch.randn(20, 3, 10, 10, dtype=DTYPE)
    (out_a, grads_a), (out_r, grads_r) = (_grads(net, x) for net in nets)
    torch.testing.assert_close(out_r, out_a, rtol=1e-12, atol=1e-13)
    for a, r in zip(grads_a, grads_r, strict=True):
        torch.testing.assert_close(r, a, rtol=1e-10, atol=1e-12)


def test_readme_examples_run():
    pytest.importorskip("torchvision")
    from torchvision.models import resnet101

    hidden, d = 8, 500
    function = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, d))
    mresnet = momentumnet.MomentumNet([function] * 10, gamma=0.9)
    assert mresnet(torch.randn(10, d)).shape == (10, d)

    resnet = resnet101()  # the README loads pretrained weights; none are downloaded here
    mresnet101 = momentumnet.transform_to_momentumnet(resnet, gamma=0.9, use_backprop=False)
    assert mresnet101.state_dict().keys() == resnet.state_dict().keys()
    nets = [m for m in mresnet101.modules() if isinstance(m, mode.nn.MomentumSequential)]
    assert [net.momentum.depth for net in nets] == [2, 3, 22, 2]  # every block after each stage's first
    assert all(net.momentum.backprop == "reversible" for net in nets)

    transformer = nn.Transformer(num_encoder_layers=6, num_decoder_layers=6)
    mtransformer = momentumnet.transform_to_momentumnet(
        transformer,
        sub_layers=["encoder.layers", "decoder.layers"],
        gamma=0.9,
        use_backprop=False,
        keep_first_layer=False,
    )
    stacks = [mtransformer.encoder.layers, mtransformer.decoder.layers]
    assert all(isinstance(s, mode.nn.MomentumModuleList) and s.momentum.depth == 6 for s in stacks)


def test_converted_resnet_and_transformer_train():
    pytest.importorskip("torchvision")
    from torchvision.models import resnet18

    torch.manual_seed(5)
    net = momentumnet.transform_to_momentumnet(resnet18(), use_backprop=False).train()
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    net(x).sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in net.parameters())

    transformer = nn.Transformer(
        d_model=16, nhead=2, num_encoder_layers=3, num_decoder_layers=3, dim_feedforward=32, dropout=0.0
    )
    converted = momentumnet.transform_to_momentumnet(
        transformer, ["encoder.layers", "decoder.layers"], keep_first_layer=False
    )
    src, tgt = torch.randn(5, 2, 16, requires_grad=True), torch.randn(4, 2, 16, requires_grad=True)
    converted(src, tgt).sum().backward()
    assert src.grad is not None and tgt.grad is not None


def test_keep_first_layer_leaves_each_stacks_first_block_as_it_is():
    torch.manual_seed(6)
    stack = nn.Sequential(*[nn.Linear(4, 4, dtype=DTYPE) for _ in range(4)])
    model = nn.Sequential(nn.Identity(), stack)
    x = torch.randn(3, 4, dtype=DTYPE)
    for keep, first in ((True, 1), (False, 0)):
        converted = momentumnet.transform_to_momentumnet(
            model, ["1"], keep_first_layer=keep, gamma=0.5, use_backprop=True
        )
        h = x
        for block in list(stack)[:first]:
            h = block(h)
        expected = mode.MomentumNet([lambda z, b=b: b(z) - z for b in list(stack)[first:]], gamma=0.5)(h)
        torch.testing.assert_close(converted(x), expected, rtol=1e-13, atol=1e-14)


def test_is_residual_true_takes_the_blocks_as_the_residual_branches():
    functions = _mlps(3)
    x = torch.randn(2, 3, dtype=DTYPE)
    net = momentumnet.MomentumNet(functions, gamma=0.5, is_residual=True)
    by_hand = mode.MomentumNet(functions, gamma=0.5, backprop="autograd")
    torch.testing.assert_close(net(x), by_hand(x), rtol=0, atol=0)
    converted = momentumnet.transform_to_momentumnet(
        nn.Sequential(nn.Sequential(*functions)),
        ["0"],
        keep_first_layer=False,
        gamma=0.5,
        use_backprop=True,
        is_residual=True,
    )
    torch.testing.assert_close(converted(x), by_hand(x), rtol=0, atol=0)


# ---------------------------------------------------------------- against the official package


@pytest.fixture
def official():
    return pytest.importorskip("momentumnet")


@pytest.mark.parametrize("init_speed", [True, False])
@pytest.mark.parametrize("is_residual", [True, False])
def test_autograd_mode_equals_the_official_package(official, init_speed, is_residual):
    functions = _mlps(6)
    init = _mlps(1, seed=4)[0]
    kwargs = dict(init_speed=init_speed, init_function=init if init_speed else None, is_residual=is_residual)
    ours = momentumnet.MomentumNet(functions, 0.9, use_backprop=False, **kwargs)
    # 0.9 is run as the dyadic n / 2**k within 1e-9; the official package is given that gamma exactly
    theirs = official.MomentumNet(functions, ours.rule.n / 2**ours.rule.k, use_backprop=True, **kwargs)
    x = torch.randn(5, 3, dtype=DTYPE)
    (out_o, grads_o), (out_t, grads_t) = _grads(ours, x), _grads(theirs, x)
    torch.testing.assert_close(out_o, out_t, rtol=1e-13, atol=1e-14)
    for a, b in zip(grads_o, grads_t, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)


def test_batchnorm_statistics_are_updated_once(official):
    torch.manual_seed(7)
    layers = nn.Sequential(*[nn.BatchNorm1d(3, dtype=DTYPE) for _ in range(3)])
    x = torch.randn(8, 3, dtype=DTYPE)
    reference = official.MomentumNet(layers, gamma=0.9, use_backprop=True)
    expected = [b.running_mean.clone() for b in _train_step(reference, x)]
    ours = momentumnet.MomentumNet(layers, gamma=0.9, use_backprop=False)
    for layer in layers:
        layer.reset_running_stats()
    for mean, layer in zip(expected, _train_step(ours, x), strict=True):
        torch.testing.assert_close(layer.running_mean, mean, rtol=1e-12, atol=1e-15)


def _train_step(net, x):
    net.train()
    net(x.requires_grad_(True)).sum().backward()
    return list(net.functions)


def test_keyword_arguments_reach_the_functions():
    class Scaled(nn.Module):
        def forward(self, x, scale=1.0):
            return scale * torch.tanh(x)

    x = torch.randn(2, 3, dtype=DTYPE)
    net = momentumnet.MomentumNet([Scaled()] * 3, gamma=0.5, use_backprop=False)
    assert not torch.equal(net(x, scale=2.0), net(x))
    torch.testing.assert_close(net(x, scale=2.0), net(x, 2.0), rtol=0, atol=0)


# ---------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("init_speed", [True, False])
@pytest.mark.parametrize("is_residual", [True, False])
def test_official_checkpoints_load_into_the_compatible_net(official, init_speed, is_residual):
    kwargs = dict(gamma=0.9, init_speed=init_speed, is_residual=is_residual)
    theirs = official.MomentumNet(_mlps(4, seed=8), init_function=_mlps(1, seed=9)[0], **kwargs)
    ours = momentumnet.MomentumNet(_mlps(4, seed=10), init_function=_mlps(1, seed=11)[0], **kwargs)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 3, dtype=DTYPE)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-8, atol=1e-12)


def test_standalone_checkpoint_converts_for_mode_momentum_net(official):
    theirs = official.MomentumNet(_mlps(3, seed=12), gamma=0.9, init_speed=True, init_function=_mlps(1)[0])
    ours = mode.MomentumNet(_mlps(3, seed=13), gamma=0.9, v0=_mlps(1, seed=14)[0], backprop="autograd")
    ours.load_state_dict(momentumnet.convert_state_dict(theirs.state_dict()))
    x = torch.randn(3, 3, dtype=DTYPE)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("keep_first_layer", [True, False])
def test_converted_resnet_checkpoint_loads_into_the_original_and_to_momentum(official, keep_first_layer):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(15)
    trained = torchvision.models.resnet18().eval()
    theirs = official.transform_to_momentumnet(trained, keep_first_layer=keep_first_layer)
    state = momentumnet.convert_state_dict(
        theirs.state_dict(), ["layer1", "layer2", "layer3", "layer4"], keep_first_layer
    )
    assert state.keys() == trained.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in trained.state_dict().items())
    # and straight into the compatible conversion, through its load_state_dict
    ours = momentumnet.transform_to_momentumnet(
        torchvision.models.resnet18(), keep_first_layer=keep_first_layer
    )
    ours.load_state_dict(theirs.state_dict())
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in trained.state_dict().items())


@settings(max_examples=30, deadline=None)
@given(
    blocks=st.lists(st.integers(2, 4), min_size=1, max_size=3),
    keep_first_layer=st.booleans(),
    nested=st.booleans(),
)
def test_translation_gives_back_the_original_keys_of_any_converted_stack(blocks, keep_first_layer, nested):
    momentumnet_official = pytest.importorskip("momentumnet")
    stages = [nn.Sequential(*[nn.Linear(2, 2) for _ in range(n)]) for n in blocks]
    model = nn.Sequential(nn.Sequential(*stages)) if nested else nn.Sequential(*stages)
    paths = [f"0.{i}" if nested else str(i) for i in range(len(stages))]
    theirs = momentumnet_official.transform_to_momentumnet(model, paths, keep_first_layer=keep_first_layer)
    state = momentumnet.convert_state_dict(theirs.state_dict(), paths, keep_first_layer)
    assert list(state) == list(model.state_dict())


def test_translation_refuses_a_wrong_layout(official):
    model = nn.Sequential(nn.Sequential(*[nn.Linear(2, 2) for _ in range(3)]))
    theirs = official.transform_to_momentumnet(model, ["0"], keep_first_layer=False)
    with pytest.raises(ValueError, match=r"keep_first_layer=True.*0\.1\.0\.network"):
        momentumnet.convert_state_dict(theirs.state_dict(), ["0"], keep_first_layer=True)
    with pytest.raises(TypeError, match="sub_layers"):
        momentumnet.convert_state_dict(theirs.state_dict(), "0")


# ---------------------------------------------------------------- clear errors


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(gamma=1.0), ValueError, r"gamma must lie in \[0, 1\), got 1"),
        (dict(gamma=-0.1), ValueError, r"gamma must lie in \[0, 1\)"),
        (dict(gamma=0.0, use_backprop=False), ValueError, "no inverse"),
        (dict(gamma=0.9, init_speed=True), ValueError, "init_speed=True needs init_function"),
        (dict(gamma=0.9, init_function=lambda x: x), TypeError, "init_function must be an nn.Module"),
    ],
)
def test_bad_arguments_raise_naming_the_parameter(kwargs, error, match):
    with pytest.raises(error, match=match):
        momentumnet.MomentumNet(_mlps(2), **kwargs)


def test_transform_refuses_a_single_path_string():
    with pytest.raises(TypeError, match="sub_layers must be a sequence"):
        momentumnet.transform_to_momentumnet(nn.Sequential(nn.Linear(2, 2)), "0")
