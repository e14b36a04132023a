"""One exception type for input a user can fix.

The CLI turns an `AutoscopeError` into a single red line and a non-zero exit; anything
else is a bug and keeps its traceback.
"""


class AutoscopeError(Exception):
    """Bad input: the message says what is wrong and how to fix it."""
