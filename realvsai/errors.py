"""The one error type for mistakes a user can fix."""


class UserError(Exception):
    """A problem with the user's input; ``cli.run_main`` prints its message as one line and exits 1."""
