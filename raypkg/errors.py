"""The one exception type a user sees as a single line (what was wrong, where, what to do)."""


class UsageError(Exception):
    """Bad input or an impossible request. The CLI prints `error: <message>` and exits 2."""


def make_writable_dir(path: str, flag: str) -> bool:
    """Make sure `path` is a writable directory, or raise a UsageError naming `flag`; True if this created it."""
    import os

    existed = os.path.isdir(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {path} ({e.strerror}): give a writable {flag}") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"{path} is not writable: give a writable {flag}")
    return not existed
