"""The one exception type pastiche raises for problems a user can fix."""


class PasticheError(Exception):
    """A bad file, option or device. The message is one line naming the problem and the fix.

    The CLI prints it to stderr and exits non-zero, without a traceback.
    """
