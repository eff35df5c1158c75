"""transformer-depth's criteria fail on a momentum transformer that is wrong in each way they guard
against.

- Stored activations: the same conversion run with ``backprop="autograd"`` keeps every layer's
  activations for the backward pass, so its memory grows with depth like the transformer's and the
  growth criteria fail, while the validation-loss criteria, which do not guard memory, hold.
- A model that does not learn: momentum transformers whose training leaves the weights as they were
  (an optimiser that does not step, as a wrong or vanishing reversible gradient would leave them) stay
  at the loss of their initialisation, and the validation-loss criteria fail, while the memory criteria
  hold.
"""

import mode.experiments.transformer_depth as transformer_depth
from mode.experiments import run_experiment
from tests.experiments.test_experiments import REDUCED


def _failed(monkeypatch, tmp_path) -> set[str]:
    # thirty steps take the transformer from 8 bits per character to about 5, and a momentum
    # transformer that learns as well within the margin of it
    monkeypatch.setattr(transformer_depth, "QUICK", {**REDUCED["transformer-depth"][1], "steps": 30})
    result = run_experiment("transformer-depth", quick=True, seed=0, out=tmp_path)
    return {name for name, c in result["criteria"].items() if not c["passed"]}


def test_the_memory_criteria_fail_on_a_model_that_stores_activations(monkeypatch, tmp_path):
    monkeypatch.setattr(transformer_depth, "BACKPROP", "autograd")
    failed = _failed(monkeypatch, tmp_path)
    assert failed and all(": memory growth" in name for name in failed), failed
    assert len(failed) == len(transformer_depth.GAMMAS)


def test_the_loss_criteria_fail_on_a_model_that_does_not_learn(monkeypatch, tmp_path):
    train = transformer_depth.train

    def momentum_does_not_learn(model, tokens, settings, seed, context, desc):
        if desc.startswith("momentum"):
            settings = {**settings, "lr": 0.0}
        return train(model, tokens, settings, seed, context, desc)

    monkeypatch.setattr(transformer_depth, "train", momentum_does_not_learn)
    failed = _failed(monkeypatch, tmp_path)
    assert failed and all(": max over depths of validation bpc" in name for name in failed), failed
    assert len(failed) == len(transformer_depth.GAMMAS)
