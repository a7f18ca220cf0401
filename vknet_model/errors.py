"""The base of every error vknet raises about its input (a file, a setting, a message) rather than a bug.

The ``vknet`` command prints such an error as one line and exits 2 (the traceback only with ``-v``); any
other exception is a bug and keeps its traceback. Kept free of heavy imports: the dispatcher imports it
before any command runs.
"""


class VKNetError(Exception):
    """Something the user can act on: the message says what and, where it can, how."""
