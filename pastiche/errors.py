"""The one exception type pastiche raises for problems a user can fix, the one warning type, and
how their messages name an option: by its keyword in Python, by its flag in the commands."""

import contextvars
import os
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator


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


_ON_COMMAND_LINE = contextvars.ContextVar("pastiche_on_command_line", default=False)
_FLAGS = {"styles": "--style", "coarse_steps": "--schedule", "supplemental_devices": "--supplemental-device"}
_NO_VALUE = object()


def option_name(keyword: str, value: object = _NO_VALUE) -> str:
    """An option named as the user gave it, for a message: its keyword in Python (``size_pixels``,
    ``precision='float32'``), its flag within :func:`command_line` (``--size-pixels``,
    ``--precision float32``; ``--low-memory`` for ``low_memory=True``)."""
    if not on_command_line():
        return keyword if value is _NO_VALUE else f"{keyword}={value!r}"
    flag = _FLAGS.get(keyword, "--" + keyword.replace("_", "-"))
    return flag if value is _NO_VALUE or value is True else f"{flag} {value}"


def on_command_line() -> bool:
    """Whether this runs within :func:`command_line`."""
    return _ON_COMMAND_LINE.get()


@contextmanager
def command_line() -> Iterator[None]:
    """Where the commands run: the messages made within name options by their flags."""
    token = _ON_COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _ON_COMMAND_LINE.reset(token)
