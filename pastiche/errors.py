"""The one exception type pastiche raises for problems a user can fix."""


class PasticheError(Exception):
    """A bad file, option or device. The message is one line naming the problem and the fix.

    The CLI prints it to stderr and exits non-zero, without a traceback.
    """


class PasticheWarning(UserWarning):
    """Something done on the user's behalf that they may not expect (a video cropped to an even
    size, a clip's sound left out of a GIF). The CLI prints it as one "note:" line."""
