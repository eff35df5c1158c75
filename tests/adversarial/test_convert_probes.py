"""Hostile inputs to ``to_momentum`` / ``from_momentum``: each gets a correct result or a clear error."""

import pytest
import torch

from mode.nn import MomentumModuleList, MomentumSequential, from_momentum, to_momentum


class Block(torch.nn.Module):
    """A shape-preserving residual block :math:`x + \\tanh(Wx)`."""

    def __init__(self, width=4):
        super().__init__()
        self.lin = torch.nn.Linear(width, width)

    def forward(self, x):
        return x + torch.tanh(self.lin(x))


def stack(depth=3):
    torch.manual_seed(0)
    return torch.nn.Sequential(*[Block() for _ in range(depth)]).double()


def encoder():
    torch.manual_seed(1)
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    return torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=True).double().eval()


def test_root_sequential_is_converted_and_returned():
    original = stack()
    x = torch.randn(5, 4, dtype=torch.float64)
    converted = to_momentum(original, gamma=0, backprop="autograd", layers=[""])
    assert isinstance(converted, MomentumSequential) and converted.momentum.depth == 3
    torch.testing.assert_close(converted(x), original(x), rtol=1e-14, atol=1e-14)
    assert list(converted.state_dict()) == list(original.state_dict())
    back = from_momentum(converted)
    assert type(back) is torch.nn.Sequential
    torch.testing.assert_close(back(x), original(x), rtol=0, atol=0)


def test_root_conversion_in_reversible_mode_matches_autograd():
    original = stack()
    grads = []
    for backprop in ("autograd", "reversible"):
        model = to_momentum(original, gamma=0.5, backprop=backprop, layers=[""])
        model(
            torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        ).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)


def test_root_that_is_not_a_container_names_the_model_itself():
    with pytest.raises(TypeError, match=r"the model itself \(''\) is a Linear.*nn.Sequential"):
        to_momentum(torch.nn.Linear(4, 4), layers=[""])


def test_nested_targets_are_converted_inside_out():
    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(Block(), torch.nn.Sequential(Block(), Block()))

        def forward(self, x):
            return self.body(x)

    torch.manual_seed(3)
    original = Outer().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    for layers in (["body", "body.1"], ["body.1", "body"]):
        converted = to_momentum(original, gamma=0, backprop="autograd", layers=layers)
        assert isinstance(converted.body[1], MomentumSequential)
        torch.testing.assert_close(converted(x), original(x), rtol=1e-14, atol=1e-14)
    # with momentum, the inner conversion must take part whichever order the paths come in
    outer_first, inner_first, outer_only = (
        to_momentum(original, gamma=0.5, backprop="autograd", layers=layers)(x)
        for layers in (["body", "body.1"], ["body.1", "body"], ["body"])
    )
    torch.testing.assert_close(outer_first, inner_first, rtol=0, atol=0)
    assert (outer_first - outer_only).abs().max() > 1e-3


def test_converting_twice_is_converting_once():
    original = encoder()
    src = torch.randn(2, 5, 8, dtype=torch.float64)
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    once = to_momentum(original, gamma=0.5, backprop="autograd")
    twice = to_momentum(once, gamma=0.5, backprop="autograd")
    assert isinstance(twice.layers, MomentumModuleList) and twice.layers.momentum.depth == 2
    assert list(twice.state_dict()) == list(original.state_dict())
    with torch.no_grad():
        expected = once(src, src_key_padding_mask=padding)
        torch.testing.assert_close(twice(src, src_key_padding_mask=padding), expected, rtol=0, atol=0)
    # the new arguments replace the old ones, and from_momentum still gives the original back
    assert to_momentum(once, gamma=0.25).layers.momentum.gamma == 0.25
    back = from_momentum(twice)
    assert type(back.layers) is torch.nn.ModuleList and back.use_nested_tensor == original.use_nested_tensor
    with torch.no_grad():
        torch.testing.assert_close(back(src), original(src), rtol=0, atol=0)


def test_converting_a_converted_root_twice():
    original = stack()
    x = torch.randn(5, 4, dtype=torch.float64)
    once = to_momentum(original, gamma=0.5, backprop="autograd", layers=[""])
    twice = to_momentum(once, gamma=0.5, backprop="autograd", layers=[""])
    assert twice.momentum.depth == 3
    torch.testing.assert_close(twice(x), once(x), rtol=0, atol=0)


def test_eps_alone_sets_gamma():
    converted = to_momentum(encoder(), eps=2.0)
    assert converted.layers.momentum.gamma == 0.5  # gamma = 1 - h / eps with the step h = 1


def test_default_gamma_without_gamma_or_eps():
    assert to_momentum(encoder()).layers.momentum.gamma == 0.9


def test_gamma_and_eps_together_are_refused():
    with pytest.raises(ValueError, match="at most one of gamma and eps"):
        to_momentum(encoder(), gamma=0.5, eps=2.0)


def test_layers_passed_positionally_names_gamma_and_the_keyword():
    with pytest.raises(TypeError, match=r"second positional argument is gamma.*layers=\['layers'\]"):
        to_momentum(encoder(), ["layers"])
    with pytest.raises(TypeError, match=r"second positional argument is gamma.*layers=\['layers'\]"):
        to_momentum(encoder(), "layers")
