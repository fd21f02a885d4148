"""Errors a user can cause; each message is one sentence naming the cause and the fix."""


class RmbgError(Exception):
    """Base class of the runtime's user-facing errors."""


class ImageError(RmbgError):
    """An input that is not a usable image."""


class ModelError(RmbgError):
    """A model folder, metadata file, graph or engine that cannot be used here."""


class BackendUnavailable(RmbgError):
    """The requested inference backend is not installed or has no device here."""


class UsageError(RmbgError):
    """A command line that asks for something impossible or unsafe, caught before any work (exit 2)."""


class BackendError(RmbgError):
    """The backend failed while running (CUDA out of memory, a TensorRT enqueue that failed, a session
    that raised): not the image's fault, so the run stops (CLI) or the server turns not-ready."""
