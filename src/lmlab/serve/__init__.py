"""Serving: the OpenAI-compatible FastAPI app over the engine and the web chat page.

The app (`lmlab.serve.app.create_app`) needs the serve extra (fastapi, uvicorn, pydantic); its
settings (`ServeConfig`) need nothing, so the CLI can declare its flags from them.
"""

from lmlab.serve.config import ServeConfig

__all__ = ["ServeConfig"]
