"""Inference: the engine every generating part of lmlab calls."""

from lmlab.infer.engine import Completion, Engine, GenerationError, SamplingParams

__all__ = ["Completion", "Engine", "GenerationError", "SamplingParams"]
