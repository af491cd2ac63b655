"""Experiments that train models to show a phenomenon: emergence across a model-size ladder,
and reward over-optimisation. They sit above training (they run its stages) and evaluation."""
