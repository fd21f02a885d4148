"""The one exception type for mistakes a user can fix; its message is a single sentence."""


class ExportError(Exception):
    """A user-facing failure: the message names the cause and the fix."""
