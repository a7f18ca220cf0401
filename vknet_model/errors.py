"""The base of every error vknet raises about its input (a file, a setting, a message) rather than a bug.

The ``vknet`` command prints such an error as one line and exits 2 (the traceback only with ``-v``); any
other exception is a bug and keeps its traceback. Kept free of heavy imports: the dispatcher imports it
before any command runs.
"""


class VKNetError(Exception):
    """Something the user can act on: the message says what and, where it can, how."""


def one_line(exc: BaseException) -> str:
    """The user-facing line of ``exc``. An error raised in a DataLoader worker comes back with the worker's
    whole traceback as its message (18 lines for one unreadable image): its last line holds the message."""
    text = str(exc)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text
