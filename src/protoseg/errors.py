"""The one exception type for errors a user can cause and fix."""


class ProtosegError(Exception):
    """A problem with the user's input, files or setup; the message says what is wrong and how to fix it.

    The CLI prints it on one line and exits non-zero, without a traceback.
    """
