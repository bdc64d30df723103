"""The errors of the package. A :class:`UserError` is reported by the command line as one line
and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user (flags, environment, checkpoint, resources)."""


class ExperimentError(UserError):
    """A tune config that cannot be run; the message is one line naming file and key."""


class NonFiniteError(RuntimeError):
    """Training stopped: too many gradient updates in a row had NaN or Inf gradients."""
