"""The momentum step's scales, derived once per pair of exponent tensors and reused on the walk back."""

import pytest
import torch

from mode.exact import ExactState
from mode.schemes.momentum import MomentumCoefficients, momentum_scales

RULES = (MomentumCoefficients.from_gamma(0.9, 0.5), MomentumCoefficients.from_gamma(0.3, 2.0))


def _fresh(rule, state):
    return momentum_scales(state.x_exp, state.v_exp, rule.one_minus_gamma, rule.step)


def test_scales_are_those_of_the_asking_rule_at_the_current_exponents():
    torch.manual_seed(0)
    state = ExactState.encode(torch.randn(4, 3), torch.randn(4, 3))
    RULES[0].exact_step(state, torch.randn(4, 3))
    for rule in (*RULES, RULES[0]):  # another rule at the same exponents is not served the cached scales
        assert torch.equal(rule.scales(state), _fresh(rule, state))
    RULES[0].exact_step(state, 2.0**40 * torch.randn(4, 3))  # moves both exponents
    assert torch.equal(RULES[0].scales(state), _fresh(RULES[0], state))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_walk_back_over_mixed_rules_and_scale_jumps_is_bit_exact(dtype):
    torch.manual_seed(1)
    x0 = torch.randn(5, 6, dtype=dtype)
    state = ExactState.encode(x0, None)
    start = state.clone()
    forces = [torch.tanh, lambda x: 2.0**30 * torch.sin(x), torch.cos, lambda x: 2.0**-30 * x, torch.tanh]
    inputs = []
    x = state.decode_x()
    for i, force in enumerate(forces):
        inputs.append(x)
        x = RULES[i % 2].exact_step(state, force(x))
    assert any(record is not None for record in state.rescalings._entries.values())
    for i in reversed(range(len(forces))):
        rule = RULES[i % 2]
        x = rule.exact_undo_position(state)
        assert torch.equal(x, inputs[i])
        rule.exact_undo_velocity(state, forces[i](x))
    assert torch.equal(state.x, start.x) and torch.equal(state.v, start.v)
    assert torch.equal(state.x_exp, start.x_exp) and torch.equal(state.v_exp, start.v_exp)
    assert state.stack.is_empty()
