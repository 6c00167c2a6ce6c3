"""``python -m pastiche`` and the commands ``pastiche``, ``pastiche-video``, ``pastiche-compress``.

Loading torch takes about a second, before a command's own Ctrl-C handling exists: an interrupt
then would end in a traceback through the import machinery. This module imports no torch, so it
takes over SIGINT first: an interrupt while loading exits 130 with one line.
"""

import importlib
import os
import signal
import sys


def _start(prog: str, module: str, function: str) -> int:
    """Import ``pastiche.module`` with Ctrl-C as a quiet exit, then run its ``function()``."""

    def interrupted(signum, frame) -> None:
        sys.stderr.write(f"{prog}: interrupted while starting; nothing written\n")
        sys.stderr.flush()
        os._exit(130)

    # Only where Python would raise KeyboardInterrupt: an ignored SIGINT (a background job) stays so.
    replace = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if replace:
        signal.signal(signal.SIGINT, interrupted)
    try:
        command = getattr(importlib.import_module(f"pastiche.{module}"), function)
    finally:  # also when the import fails: Ctrl-C is Python's again
        if replace:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = command()
        if sys.stdout is not None:
            sys.stdout.flush()  # here, where a reader that stopped reading can be told apart
    except BrokenPipeError:  # (| head): the work is done and nobody is left to tell
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the interpreter's own flush
        code = 0
    return code


def main() -> None:
    _start("pastiche", "cli", "entry")  # exits by itself (see cli.entry)


def video() -> int:
    return _start("pastiche-video", "video", "main")


def compress() -> int:
    return _start("pastiche-compress", "compress", "main")


if __name__ == "__main__":
    main()
