"""mode.theory.phase_maps and mode.theory.fields: the maps and fields the checks are built on."""

import pytest
import torch

from mode.ode import as_vector_field
from mode.theory.fields import GradientField, TanhField, frozen
from mode.theory.phase_maps import additive_coupling, jacobian, scheme_map, split, symplectic_form, verlet_map

DTYPE = torch.float64


def points(d, count=5, seed=0):
    return torch.randn(count, 2 * d, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def test_tanh_field_respects_its_lipschitz_bound():
    field = frozen(TanhField(5, seed=1, scale=2.0, lipschitz=0.3))
    for z in points(5, 4):
        norm = torch.linalg.matrix_norm(jacobian(field, split(z)[0]), ord=2)
        assert 0 < norm <= 0.3 + 1e-12


def test_gradient_field_is_minus_the_gradient_of_its_potential():
    field, t = GradientField(4, seed=2), torch.tensor(0.7, dtype=DTYPE)
    x = split(points(4))[0].requires_grad_(True)
    (grad,) = torch.autograd.grad(field.potential(x, t).sum(), x)
    torch.testing.assert_close(field(x.detach(), t), -grad, rtol=1e-12, atol=1e-12)


def test_frozen_field_is_called_without_time():
    field = frozen(TanhField(3, seed=3), t=0.5)
    x = torch.randn(2, 3, dtype=DTYPE)
    torch.testing.assert_close(as_vector_field(field)(x, torch.tensor(9.0)), field(x))


def test_scheme_map_matches_scheme_step():
    f = TanhField(3, seed=4)
    z = points(3, 1)[0]
    x, v = split(z)
    from mode.schemes import SCHEMES

    expected = torch.cat(SCHEMES["leapfrog"].step(f, x, v, torch.tensor(0.2, dtype=DTYPE), 0.1, 0.5), -1)
    torch.testing.assert_close(scheme_map("leapfrog", f, 0.2, 0.1, 0.5)(z), expected)


def test_symplectic_form():
    omega = symplectic_form(2)
    torch.testing.assert_close(omega.T, -omega)
    torch.testing.assert_close(omega @ omega, -torch.eye(4, dtype=DTYPE))


def test_additive_coupling_has_its_closed_form_inverse():
    F, G = frozen(TanhField(3, seed=5)), frozen(TanhField(3, seed=6))
    z = points(3)
    a2, b2 = split(additive_coupling(F, G)(z))
    b = b2 - G(a2)
    torch.testing.assert_close(torch.cat([a2 - F(b), b], -1), z, rtol=0, atol=1e-14)


@pytest.mark.parametrize("h", [0.1, 0.4])
def test_verlet_is_time_reversible(h):
    g = frozen(TanhField(3, seed=7))
    z = points(3)
    there = verlet_map(g, h)(z)
    torch.testing.assert_close(verlet_map(g, -h)(there), z, rtol=0, atol=1e-13)
