"""The one error type for mistakes a user can fix; the scripts print its message as one line."""


class UserError(Exception):
    """A problem with the user's input (a missing folder, a wrong layout, a clash).

    The message says what happened and how to fix it; ``cli.run_main`` prints it without a
    traceback and exits with status 1.
    """
