"""Tests for pastiche.console: what the commands share on the console."""

import io
import sys
import warnings

import pytest

from pastiche.console import OneLineParser, notes, printer
from pastiche.errors import PasticheWarning


def test_a_usage_error_is_one_line_naming_the_help(capsys):
    parser = OneLineParser(prog="prog")
    parser.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--n", "x"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == "prog: error: argument --n: invalid int value: 'x' (see prog --help)\n"


def test_notes_prints_pastiche_warnings_as_one_line_each_or_none_when_quiet(capsys):
    with notes("prog"):
        warnings.warn("the style is small", PasticheWarning)
        warnings.warn("the style is small", PasticheWarning)  # each time, not once per place
    assert capsys.readouterr().err == "prog: note: the style is small\n" * 2
    with notes("prog", quiet=True):
        warnings.warn("hidden", PasticheWarning)
    assert capsys.readouterr().err == ""


def test_printer_stops_at_the_first_failed_write_and_says_so_once(capsys):
    written = []

    def write(text):
        if len(written) == 2:
            raise BrokenPipeError(32, "Broken pipe")
        written.append(text)
    say = printer(write, "prog")
    for n in range(5):
        say(f"row {n}")
    assert written == ["row 0", "row 1"]
    assert capsys.readouterr().err == "prog: cannot print progress (Broken pipe); going on without it\n"
    printer(None)("nothing")  # None: prints nothing
    assert capsys.readouterr() == ("", "")


def test_printer_flushes_each_text(monkeypatch):
    """Rows read through a pipe come as they are made, not when a block of them fills."""
    class Piped(io.StringIO):
        flushed = []

        def flush(self):
            self.flushed.append(self.getvalue())
    monkeypatch.setattr(sys, "stdout", Piped())
    say = printer(print)
    say("row 1")
    say("row 2")
    assert Piped.flushed == ["row 1\n", "row 1\nrow 2\n"]
