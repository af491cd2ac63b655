"""Serving: the OpenAI-compatible FastAPI app over the engine, and the web chat page."""

from lmlab.serve.app import APIError, ServeConfig, create_app

__all__ = ["APIError", "ServeConfig", "create_app"]
