"""User-facing errors: one line naming the problem and the fix; the CLI exits non-zero on them."""


class SptError(Exception):
    """An error caused by the user's input or environment, shown as one line without a traceback."""

    exit_code = 2


class NotAStoreError(SptError):
    """A file that is not an spt store (not SQLite, or SQLite without spt's schema)."""


class SchemaTooNewError(SptError):
    """A store written by a newer spt than this one."""
