"""The settings of a server (its model id and its limits), checked in one place.

This module needs none of the serve extra (fastapi), so the CLI declares its `serve` flags from
`ServeConfig` without importing the app.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.bounds import MAX_NEW_TOKENS, check_count, check_number

DEFAULT_NAME = "lmlab"


@dataclass
class ServeConfig:
    """Identity and limits of a server; `lmlab serve` takes each field as a flag.

    The defaults that `name` and `api_key` describe are the command's: it names the model after
    the run directory and reads $LMLAB_API_KEY. `create_app` serves an unnamed config as
    `lmlab` and one without a key openly."""

    name: str | None = None
    """Model id clients send as `model` (default: the run directory's name)."""
    max_queue: int = 64
    """Requests held beyond max_batch before new ones get 429."""
    max_tokens: int = 512
    """Most new tokens per request (and the default, within the context)."""
    timeout: float = 600.0
    """Seconds a request may take before it is cancelled (504)."""
    api_key: str | None = None
    """Require 'Authorization: Bearer KEY' on /v1/* (default: $LMLAB_API_KEY, else open)."""

    def validate(self) -> None:
        """Raise a one-line ValueError naming the first setting out of range (by its flag)."""
        if self.max_queue < 0:
            raise ValueError(f"--max-queue must be >= 0, got {self.max_queue}")
        check_count("--max-tokens", self.max_tokens, MAX_NEW_TOKENS)
        if not check_number("--timeout", self.timeout) > 0:
            raise ValueError(f"--timeout must be > 0, got {self.timeout}")
