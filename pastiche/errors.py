"""The one exception type pastiche raises for problems a user can fix, and the one warning type."""

import os
import sys
import warnings


class PasticheError(Exception):
    """A bad file, option or device. The message is one line naming the problem and the fix.

    The CLI prints it to stderr and exits non-zero, without a traceback.
    """


class PasticheWarning(UserWarning):
    """Something done on the user's behalf that they may not expect (a video cropped to an even
    size, a clip's sound left out of a GIF). The CLI prints it as one "note:" line."""


def warn(message: str) -> None:
    """Issue a :class:`PasticheWarning` shown at the first caller outside pastiche (a notebook
    cell, a script), not at the line in pastiche that found it, nor in a decorator's wrapper
    around a pastiche method (torch's inference_mode, contextlib's)."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    wrappers = (os.path.join("torch", "utils", "_contextlib.py"), os.sep + "contextlib.py")
    frame, level = sys._getframe(1), 2  # level 2: warn()'s caller
    while frame is not None and (os.path.abspath(frame.f_code.co_filename).startswith(package)
                                 or frame.f_code.co_filename.endswith(wrappers)):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, PasticheWarning, stacklevel=level)
