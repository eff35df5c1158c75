import os

import pytest
import torch

import mode
from mode.nn import MomentumModuleList, MomentumSequential, from_momentum, to_momentum

if os.environ.get("CI"):
    import torchvision  # noqa: F401  (CI must run the conversion tests, not skip them)
torchvision = pytest.importorskip("torchvision")

RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "resnext50_32x4d"]


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def flat(tensors):
    """One vector of all gradients: some attention gradients are exactly zero in theory (key biases)."""
    return torch.cat([t.flatten() for t in tensors])


@pytest.mark.parametrize("name", RESNETS)
def test_gamma_zero_reproduces_torchvision_resnets(name):
    torch.manual_seed(0)
    original = getattr(torchvision.models, name)(num_classes=10).eval()
    converted = to_momentum(original, gamma=0, backprop="autograd").eval()
    stages = [getattr(converted, f"layer{i}") for i in range(1, 5)]
    assert all(isinstance(s, MomentumSequential) for s in stages)
    for stage in stages:
        kept = list(stage)[: stage.start]
        assert all(b.downsample is not None for b in kept[-1:]), "only the shape-changing block stays"
        assert stage.momentum.depth == len(stage) - stage.start
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), original(x), rtol=1e-5, atol=1e-5)
    assert list(converted.state_dict()) == list(original.state_dict())


def test_state_dict_round_trip_and_from_momentum():
    torch.manual_seed(1)
    original = torchvision.models.resnet18(num_classes=10).eval()
    converted = to_momentum(original, gamma=0.9)
    other = torchvision.models.resnet18(num_classes=10)
    converted.load_state_dict(other.state_dict())
    for (key, a), b in zip(converted.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    back = from_momentum(converted).eval()
    assert type(back.layer1) is torch.nn.Sequential
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back(x), other.eval()(x), rtol=0, atol=0)
    # the converted model shares no tensors with its source
    assert all(
        p.data_ptr() != q.data_ptr()
        for p, q in zip(converted.parameters(), original.parameters(), strict=True)
    )


def test_reversible_resnet18_gradients_and_running_statistics_in_train_mode():
    torch.manual_seed(2)
    base = torchvision.models.resnet18(num_classes=10).double().train()
    reference = to_momentum(base, gamma=0.9, backprop="autograd")
    reversible = to_momentum(base, gamma=0.9, backprop="reversible")
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    for model in (reference, reversible):
        torch.nn.functional.cross_entropy(model(x), torch.arange(4)).backward()
    for (name, p), q in zip(reference.named_parameters(), reversible.parameters(), strict=True):
        assert rel(q.grad, p.grad) <= 1e-10, name
    for (name, a), b in zip(reference.state_dict().items(), reversible.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=name)


def test_reversible_resnet18_float32():
    torch.manual_seed(3)
    base = torchvision.models.resnet18(num_classes=10).train()
    grads = []
    for backprop in ("autograd", "reversible"):
        model = to_momentum(base, gamma=0.9, backprop=backprop)
        torch.manual_seed(4)
        model(torch.randn(4, 3, 32, 32)).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert rel(grads[1], grads[0]) <= 1e-5


def encoder(layers=3, dropout=0.0):
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=dropout, batch_first=True)
    return torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=True)


def test_transformer_encoder_masks_reach_every_layer():
    torch.manual_seed(5)
    original = encoder().double().eval()
    src = torch.randn(2, 5, 16, dtype=torch.float64)
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    causal = torch.zeros(5, 5, dtype=torch.bool).triu(1)  # same mask type as the padding mask
    converted = to_momentum(original, gamma=0, backprop="autograd").eval()
    assert isinstance(converted.layers, MomentumModuleList)
    with torch.no_grad():
        expected = original(src, mask=causal, src_key_padding_mask=padding)
        got = converted(src, mask=causal, src_key_padding_mask=padding)
        unmasked = converted(src)
    torch.testing.assert_close(got[~padding], expected[~padding], rtol=1e-12, atol=1e-12)
    assert (unmasked - got).abs().max() > 1e-3, "the masks must change the result"
    # momentum form, reversible against autograd, masks included
    outs, grads = [], []
    weights = torch.randn(8, 16, dtype=torch.float64)
    for backprop in ("autograd", "reversible"):
        model = to_momentum(original, gamma=0.9, backprop=backprop).train()
        x = src.clone().requires_grad_(True)
        out = model(x, mask=causal, src_key_padding_mask=padding)
        # a random projection: the sum of a LayerNorm output is constant and would test nothing
        (out[~padding] * weights).sum().backward()
        outs.append(out.detach())
        grads.append([x.grad] + [p.grad for p in model.parameters()])
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-10)
    assert rel(flat(grads[1]), flat(grads[0])) <= 1e-10
    assert rel(grads[1][0], grads[0][0]) <= 1e-10
    assert grads[0][0].norm() > 1e-3


def test_transformer_decoder_memory_gets_gradients():
    torch.manual_seed(6)
    layer = torch.nn.TransformerDecoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    original = torch.nn.TransformerDecoder(layer, 3).double()
    tgt = torch.randn(2, 4, 16, dtype=torch.float64)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.float64)
    grads = []
    weights = torch.randn(2, 4, 16, dtype=torch.float64)
    for backprop in ("autograd", "reversible"):
        model = to_momentum(original, gamma=0.5, backprop=backprop)
        memory = torch.randn(2, 6, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
        memory.requires_grad_(True)
        (model(tgt, memory, tgt_mask=causal) * weights).sum().backward()
        grads.append([memory.grad] + [p.grad for p in model.parameters()])
    assert rel(flat(grads[1]), flat(grads[0])) <= 1e-10
    assert rel(grads[1][0], grads[0][0]) <= 1e-10
    assert grads[0][0].norm() > 1e-3


class Block(torch.nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.lin = torch.nn.Linear(d_in, d_out)

    def forward(self, x):
        return x[..., : self.lin.out_features] + torch.tanh(self.lin(x))


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Linear(3, 8)
        self.body = torch.nn.Sequential(*[Block(8, 8) for _ in range(4)])
        self.extra = torch.nn.ModuleList([Block(8, 8) for _ in range(3)])
        self.bad = torch.nn.Sequential(Block(8, 8), Block(8, 4))

    def forward(self, x, bad=False):
        x = self.body(self.stem(x))
        for block in self.extra:
            x = block(x)
        return self.bad(x) if bad else x


def test_generic_containers_by_dotted_path():
    torch.manual_seed(8)
    original = Model().double()
    x = torch.randn(5, 3, dtype=torch.float64)
    converted = to_momentum(original, gamma=0, backprop="autograd", layers=["body", "extra"])
    torch.testing.assert_close(converted(x), original(x), rtol=1e-14, atol=1e-14)
    reversible = to_momentum(original, gamma=0.9, layers=["body", "extra"])
    reference = to_momentum(original, gamma=0.9, backprop="autograd", layers=["body", "extra"])
    for model in (reversible, reference):
        model(x).sum().backward()
    for p, q in zip(reference.parameters(), reversible.parameters(), strict=True):
        if p.grad is not None:
            assert rel(q.grad, p.grad) <= 1e-10


def test_conversion_errors():
    model = Model()
    with pytest.raises(ValueError, match="bad.1 maps shape"):
        to_momentum(model, layers=["bad"])(torch.randn(2, 3), bad=True)
    with pytest.raises(ValueError, match="not a submodule"):
        to_momentum(model, layers=["nowhere"])
    with pytest.raises(TypeError, match="only nn.Sequential and nn.ModuleList"):
        to_momentum(model, layers=["stem"])
    with pytest.raises(TypeError, match="dotted module paths"):
        to_momentum(model, layers="body")
    with pytest.raises(ValueError, match="layers="):
        to_momentum(model)
    with pytest.raises(ValueError, match="gamma"):
        to_momentum(torchvision.models.resnet18(), gamma=1.0)


def test_top_level_api():
    assert mode.to_momentum is to_momentum and mode.from_momentum is from_momentum
