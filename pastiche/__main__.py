"""``python -m pastiche`` and the commands ``pastiche``, ``pastiche-video``, ``pastiche-compress``.

Loading torch takes about a second, before a command's own Ctrl-C handling exists: an interrupt
then would end in a traceback through the import machinery. This module imports no torch, so it
takes over SIGINT and SIGTERM first: either while loading exits 130 with one line. Each command's
main() then treats SIGTERM as Ctrl-C (:func:`termination_as_interrupt`).
"""

import importlib
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, List, NoReturn


def _start(prog: str, module: str, function: str) -> NoReturn:
    """Import ``pastiche.module`` with Ctrl-C as a quiet exit, run its ``function()``, and exit
    with the status it returns (see :func:`_exit`)."""
    try:
        os.getcwd()
    except FileNotFoundError:  # a shell left in a deleted folder: there `import torch` itself dies
        sys.stderr.write(f"{prog}: error: the current directory no longer exists; cd to one that does"
                         " and run again\n")  # (MKL: "Cannot load libtorch_cpu.so", exit 2)
        _exit(1)

    def interrupted(signum, frame) -> None:
        sys.stderr.write(f"{prog}: interrupted while starting; nothing written\n")
        sys.stderr.flush()
        os._exit(130)

    # Only where Python would raise KeyboardInterrupt, or SIGTERM would kill: an ignored signal (a
    # background job's SIGINT) stays so. SIGTERM, which main() treats as Ctrl-C, too.
    replaced = {sig: previous for sig, previous in ((signal.SIGINT, signal.default_int_handler),
                                                   (signal.SIGTERM, signal.SIG_DFL))
                if signal.getsignal(sig) is previous}
    for sig in replaced:
        signal.signal(sig, interrupted)
    try:
        command = getattr(importlib.import_module(f"pastiche.{module}"), function)
    finally:  # also when the import fails: the signals are as they were
        for sig, previous in replaced.items():
            signal.signal(sig, previous)
    try:
        with termination_as_interrupt():  # from here on; each main() has its own too
            code = command()
    except KeyboardInterrupt:  # before a main() took charge of it (building its parser)
        sys.stderr.write(f"{prog}: interrupted; nothing written\n")
        code = 130
    except SystemExit as e:  # argparse's own exits (--help, --version, a usage error), said already
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    except BrokenPipeError:  # stdout's reader stopped reading (| head): all it wanted
        code = 0
    _exit(code)


def _exit(code: int) -> NoReturn:
    """Flush stdio and exit without the interpreter's teardown. A CUDA build of torch runs its
    libraries' static destructors at exit (cuBLASLt, cuSPARSELt), which page in ~125 MB of them
    even on a machine without a GPU: the peak RSS of ``python -c "import torch"`` is 646 MB, 520
    MB with ``os._exit``, and exiting takes 0.35 s longer. Every command has written and closed
    what it keeps by then; only stdio is buffered."""
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # started with it closed (>&-): print() skipped it
            continue
        try:
            stream.flush()
        except BrokenPipeError:  # as above: nobody left to read the rest
            pass
        except OSError:  # e.g. a full disk under a redirect; Python's own exit says 120
            code = code or 120
    os._exit(code)


@contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (kill, a job scheduler's time limit) as Ctrl-C within a command's main(), so
    it stops the same way: the latest image saved, temporary files removed, exit 130. Signal
    handlers belong to the main thread only."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield  # an ignored SIGTERM (nohup-like launchers) stays ignored
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def interrupts_held() -> Iterator[List[int]]:
    """Within, Ctrl-C (and SIGTERM where :func:`termination_as_interrupt` made it one) is noted in
    the yielded list, not raised, so that a file being written is finished whole; the caller says
    what follows. Where Python would not raise KeyboardInterrupt for it, a signal is left alone."""
    caught: List[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    held = [sig for sig in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(sig) is signal.default_int_handler]
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in held}
    try:
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main() -> NoReturn:
    _start("pastiche", "cli", "main")


def video() -> NoReturn:
    _start("pastiche-video", "video", "main")


def compress() -> NoReturn:
    _start("pastiche-compress", "compress", "main")


if __name__ == "__main__":
    main()
