"""Experiments: one module each, registered by name; ``mode experiment`` / ``mode reproduce`` run them."""

from mode.experiments.registry import EXPERIMENTS, Context, criterion, experiment
from mode.experiments.runner import load, reproduce, run_experiment

__all__ = ["EXPERIMENTS", "Context", "criterion", "experiment", "load", "reproduce", "run_experiment"]
