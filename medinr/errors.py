"""The one exception type that medinr raises for bad input; the CLI turns it into a single error line."""


class MedinrError(Exception):
    """A user-facing error: a bad file, a bad argument, or data that cannot be used.

    The message is one line that says what is wrong and, where possible, what to do about it.
    """
