"""The one exception type that means "the user's input is wrong".

Every layer raises :class:`UserError` (or a subclass) for bad input — a missing file, malformed
JSON, an arch outside its space — and the CLI turns it into one line on stderr and exit code 2.
Anything else escaping to the CLI is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input from the user; the message is shown as-is, on one line."""
