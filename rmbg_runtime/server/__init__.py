"""`rmbg serve`: an HTTP server over the staged pipeline (the `serve` extra: FastAPI, uvicorn,
prometheus-client, python-multipart). Imported only by `rmbg serve`, never by `import rmbg_runtime`.
"""

from .settings import ServerSettings

__all__ = ["ServerSettings"]
