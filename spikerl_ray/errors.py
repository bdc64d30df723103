"""Errors a user can cause, reported by the command line as one line and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user (flags, environment, checkpoint, resources)."""
