"""The one exception type a user sees as a single line (what was wrong, where, what to do)."""


class UsageError(Exception):
    """Bad input or an impossible request. The CLI prints `error: <message>` and exits 2."""
