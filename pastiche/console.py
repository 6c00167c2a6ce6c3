"""What the commands (``pastiche``, ``pastiche-video``, ``pastiche-compress``) share on the
console: usage errors in one line, warnings as one-line notes, and printing that a closed stdout
does not stop. No torch here: ``pastiche-video`` joins frames without it."""

from __future__ import annotations

import argparse
import sys
import warnings
from contextlib import contextmanager, suppress
from typing import Callable, Iterator, Optional

from .errors import PasticheWarning


class OneLineParser(argparse.ArgumentParser):
    """argparse with a usage error in one line, as every other error of the commands."""

    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@contextmanager
def notes(prog: str, *, quiet: bool = False) -> Iterator[None]:
    """Print each :class:`PasticheWarning` raised within as one line on stderr, "PROG: note: ..."
    (none if ``quiet``); other warnings as Python prints them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if quiet else "always", PasticheWarning)
        shown = warnings.showwarning

        def show(message, category, *rest, **options) -> None:
            if issubclass(category, PasticheWarning):
                print(f"{prog}: note: {message}", file=sys.stderr)
            else:
                shown(message, category, *rest, **options)
        warnings.showwarning = show
        yield


def printer(write: Optional[Callable[[str], None]], prog: str = "pastiche") -> Callable[[str], None]:
    """``write`` (None: print nothing) until it fails, as a closed pipe (``| head``) or a full
    disk under stdout makes it; then one line on stderr, "PROG: cannot print progress ...", and no
    more text, so that the run goes on and its image is saved. Each text is flushed: a log read
    through a pipe (``| tee run.log``) shows each row as it comes, and a message on stderr never
    lands inside a row still in stdout's buffer."""
    failed = write is None

    def say(text: str) -> None:
        nonlocal failed
        if failed:
            return
        try:
            write(text)
            if sys.stdout is not None:  # None: started with stdout closed, where print() skips it
                sys.stdout.flush()
        except OSError as e:
            failed = True
            with suppress(OSError):  # stderr gone too: nowhere left to say it
                print(f"{prog}: cannot print progress ({e.strerror or e}); going on without it",
                      file=sys.stderr)
    return say
