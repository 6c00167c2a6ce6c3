"""``python -m pastiche`` and the ``pastiche`` command (see :func:`pastiche.cli.entry`).

Loading torch takes about a second, before the command's own Ctrl-C handling exists: an
interrupt then would end in a traceback through the import machinery. This module imports no
torch, so it can take over SIGINT first: an interrupt while loading exits 130 with one line.
"""

import os
import signal
import sys


def _interrupted_while_loading(signum, frame) -> None:
    sys.stderr.write("pastiche: interrupted while starting; nothing written\n")
    sys.stderr.flush()
    os._exit(130)


def main() -> None:
    # Only where Python would raise KeyboardInterrupt: an ignored SIGINT (a background job) stays so.
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted_while_loading)
    from .cli import entry

    signal.signal(signal.SIGINT, previous)
    entry()


if __name__ == "__main__":
    main()
