"""Tests for the ``pastiche`` command, run in-process through ``pastiche.cli.main``.

Every run passes ``--num-steps`` and ``--size`` (defaults may change) and uses tiny images from
conftest.py. Bad input must give a non-zero exit, one line on stderr naming the culprit, no
traceback, and leave the file system as it was (no output, no temporary file, nothing clobbered).
"""

import errno
import io
import os
import re
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pastiche
import pastiche.cli as cli_module
from pastiche.cli import main
from pastiche.engine import StyleTransfer
from pastiche.vgg import LAYER_NAMES

SHALLOW = ["--content-layers", "block2_relu1", "--style-layers", "block1_relu1", "block2_relu1"]


def cli(*argv):
    """main(argv) → exit code, also for argparse's SystemExit (--help, --version, bad flags)."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:
        return 0 if e.code is None else e.code


def snapshot(root: Path):
    """{relative path: bytes} of every file under ``root`` (directories as None, links as their target)."""
    return {str(p.relative_to(root)): (os.readlink(p) if p.is_symlink() else None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


def pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture
def images(tmp_path, content_path, style_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return content_path, style_path


# ---------------------------------------------------------------------------- runs


def test_tiny_run_writes_a_png(images, tmp_path, capsys):
    content, style = images
    out = tmp_path / "out.png"
    code = cli("-c", content, "-s", style, "-o", out, "--num-steps", 3, "--size", 32, "--device", "cpu")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as im:
        assert im.size == (32, 27) and im.mode == "RGB"  # 48x40 content, long edge 32
    start = np.asarray(Image.open(content).convert("RGB").resize((32, 27), Image.BILINEAR), np.int16)
    assert np.abs(pixels(out).astype(np.int16) - start).mean() > 2  # the style did something
    assert captured.out  # verbose by default


@pytest.mark.parametrize("precision", ["float32", pytest.param("bfloat16", marks=pytest.mark.bfloat16)])
def test_precision_is_chosen_and_shown(images, tmp_path, capsys, precision):
    content, style = images
    code = cli("-c", content, "-s", style, "-o", tmp_path / "out.png", "--num-steps", 2, "--size", 32,
               "--precision", precision, *SHALLOW)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith(f"device: cpu ({precision})\n")


def test_low_memory_runs_in_a_fresh_process(images, tmp_path):
    """--low-memory changes glibc's policy for the whole process, so it runs in its own."""
    import subprocess
    import sys

    content, style = images
    out = tmp_path / "out.png"
    result = subprocess.run([sys.executable, "-m", "pastiche", "-c", str(content), "-s", str(style),
                             "-o", str(out), "--num-steps", "2", "--size", "32", "--device", "cpu",
                             "--low-memory", "--no-verbose"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_cuda_libraries_are_released_with_the_runs_devices_before_the_job_is_built(images, tmp_path, monkeypatch):
    """pastiche.memory.release_cuda_libraries gets every device of the run (it keeps the libraries
    for one on CUDA), before the weights load, so that the peak is without them."""
    content, style = images
    calls = []

    def job(*args, **kwargs):
        calls.append("job")
        raise KeyboardInterrupt  # enough: what came before is what is tested

    monkeypatch.setattr(cli_module, "release_cuda_libraries", calls.append)
    monkeypatch.setattr(cli_module, "StyleTransfer", job)
    assert cli("-c", content, "-s", style, "-o", tmp_path / "out.png", "--device", "cpu",
               "--supplemental-device", "cpu", 3) == 130
    assert calls == [["cpu", "cpu"], "job"]


def test_command_flushes_what_it_printed_before_its_fast_exit(images, tmp_path):
    """``python -m pastiche`` ends with os._exit (see __main__._exit): what it printed to a pipe, which
    Python buffers, must still arrive, and the exit status must be main()'s."""
    import subprocess
    import sys

    content, style = images
    out = tmp_path / "out.png"
    command = [sys.executable, "-m", "pastiche", "-c", str(content), "-s", str(style), "--size", "32",
               "--device", "cpu", *map(str, SHALLOW)]
    done = subprocess.run(command + ["-o", str(out), "--num-steps", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("device: cpu") and done.stdout.endswith(f"wrote {out}\n")
    failed = subprocess.run(command + ["-o", str(tmp_path / "x.png"), "--num-steps", "0"],
                            capture_output=True, text=True)
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr == "pastiche: error: --num-steps must be at least 1, got 0\n"


@pytest.mark.parametrize("command, args, status, stream, text", [
    ("main", ["--version"], 0, "stdout", "pastiche "),
    ("main", ["--bogus"], 2, "stderr", "unrecognized arguments: --bogus"),
    ("video", ["--bogus"], 2, "stderr", "pastiche-video: error: "),
    ("compress", ["--bogus"], 2, "stderr", "pastiche-compress: error: "),
])
def test_every_command_skips_the_teardown(command, args, status, stream, text):
    """The three commands, argparse's exits included, leave through os._exit as a run does (an
    atexit handler, which the interpreter's teardown would run, never does), with their status."""
    import subprocess
    import sys

    code = ("import atexit, sys; from pastiche import __main__ as m; atexit.register(print, 'teardown');"
            f" sys.argv = ['pastiche', *{args!r}]; m.{command}()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == status
    assert text in getattr(done, stream) and "teardown" not in done.stdout


@pytest.mark.parametrize("command", ["pastiche.video", "pastiche.compress"])
def test_the_other_commands_usage_errors_are_one_line_too(command, capsys):
    import importlib

    with pytest.raises(SystemExit) as info:
        importlib.import_module(command).main(["--bogus"])
    err = capsys.readouterr().err  # argparse names the missing arguments first
    prog = command.replace(".", "-")
    assert info.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"{prog}: error: ") and err.endswith(f" (see {prog} --help)\n")


@pytest.mark.parametrize("launcher, args", [("main", ["--list-layers"]), ("main", ["--version"]),
                                            ("video", ["--help"]), ("compress", ["--help"])])
def test_a_reader_that_stops_reading_or_a_closed_stdout_is_no_traceback(launcher, args):
    """`pastiche --list-layers | head -1` and `pastiche --version >&-`: exit 0, nothing on stderr."""
    import os
    import subprocess
    import sys

    code = f"import sys; sys.argv = ['pastiche', *{args!r}]; from pastiche.__main__ import {launcher}; sys.exit({launcher}())"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader has gone before the first line
    assert process.wait() == 0 and process.stderr.read() == b""
    closed = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: os.close(1))
    assert closed.returncode == 0 and b"Traceback" not in closed.stderr


@pytest.mark.parametrize("command, module, ignored, sig", [
    ("main", "pastiche.cli", False, "SIGINT"), ("video", "pastiche.video", False, "SIGINT"),
    ("compress", "pastiche.compress", False, "SIGINT"), ("main", "pastiche.cli", True, "SIGINT"),
    ("main", "pastiche.cli", False, "SIGTERM"), ("main", "pastiche.cli", True, "SIGTERM")],
    ids=["pastiche", "pastiche-video", "pastiche-compress", "sigint-ignored", "sigterm", "sigterm-ignored"])
def test_ctrl_c_while_torch_loads_is_one_line(command, module, ignored, sig):
    """The commands' launcher (pastiche.__main__) imports no torch and takes SIGINT and SIGTERM
    first: either while the command's module (and torch) loads exits 130 with one line, no
    traceback (SIGTERM killed the process unsaid, 143). Where the signal is ignored (a shell's
    background job) it stays ignored and the command runs."""
    import subprocess
    import sys

    code = ("import os, signal, sys, time\n"
            f"if {ignored}: signal.signal(signal.{sig}, signal.SIG_IGN)\n"
            "import pastiche.__main__ as launcher\n"
            "assert 'torch' not in sys.modules\n"
            "class Interrupt:  # the user presses Ctrl-C as the command's module starts loading\n"
            "    def find_spec(self, name, path, target=None):\n"
            f"        if name == {module!r}:\n"
            f"            os.kill(os.getpid(), signal.{sig}); time.sleep(0.5)\n"
            "sys.meta_path.insert(0, Interrupt())\n"
            "sys.argv = ['pastiche', '--version']\n"
            f"launcher.{command}()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if ignored:
        assert (done.returncode, done.stdout.split()[0], done.stderr) == (0, "pastiche", "")
    else:
        prog = {"main": "pastiche", "video": "pastiche-video", "compress": "pastiche-compress"}[command]
        assert (done.returncode, done.stdout) == (130, "")
        assert done.stderr == f"{prog}: interrupted while starting; nothing written\n"


@pytest.mark.skipif(os.name != "posix", reason="a folder in use cannot be removed elsewhere")
@pytest.mark.parametrize("command, prog", [("main", "pastiche"), ("video", "pastiche-video"),
                                           ("compress", "pastiche-compress")])
def test_a_deleted_current_directory_is_one_line(tmp_path, command, prog):
    """A shell left in a folder that was deleted: there ``import torch`` itself dies (MKL's "Cannot
    load libtorch_cpu.so", exit 2), and relative paths fail with a bare "[Errno 2]"."""
    import shlex
    import subprocess

    gone = shlex.quote(str(tmp_path / "gone"))
    launch = shlex.quote(f"import pastiche.__main__ as launcher; launcher.{command}()")  # as the entry points do
    script = f"mkdir {gone} && cd {gone} && rmdir {gone} && exec {shlex.quote(sys.executable)} -c {launch} --help"
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"{prog}: error: the current directory no longer exists; cd to one that does and run again\n"


def test_an_interrupt_before_main_takes_charge_is_one_line(monkeypatch, capsys):
    """Between the import and main()'s own handling (its parser, which asks for the devices) a
    Ctrl-C gave a traceback and a SIGTERM killed the process unsaid."""
    import pastiche.__main__ as launcher
    import pastiche.cli

    for sig in (signal.SIGINT, signal.SIGTERM):
        def build_parser():
            os.kill(os.getpid(), sig)
        monkeypatch.setattr(pastiche.cli, "build_parser", build_parser)
        monkeypatch.setattr(launcher.os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
        with pytest.raises(SystemExit) as info:
            launcher.main()
        assert info.value.code == 130
        assert capsys.readouterr().err == "pastiche: interrupted; nothing written\n"
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_the_launcher_gives_ctrl_c_back_when_the_import_fails(monkeypatch):
    """A command module that fails to import (a missing dependency) must not leave the
    launcher's quiet exit as the process's Ctrl-C handler."""
    import importlib
    import signal

    import pastiche.__main__ as launcher

    def failing(name):
        raise ImportError("No module named 'tqdm'")

    monkeypatch.setattr(importlib, "import_module", failing)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with pytest.raises(ImportError):
        launcher.video()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_no_verbose_prints_nothing(images, tmp_path, capsys):
    content, style = images
    code = cli("-c", content, "-s", style, "-o", tmp_path / "out.png", "--num-steps", 2, "--size", 32,
               "--info-step", 1, "--no-verbose", *SHALLOW)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == "" and captured.err == ""


def test_default_output_name_never_overwrites(images, tmp_path, capsys):
    content, style = images
    argv = ["-c", "content.png", "-s", "style.png", "--num-steps", 2, "--size", 32, "--no-verbose", *SHALLOW]
    assert cli(*argv) == 0
    first = tmp_path / "content_style.png"
    assert first.is_file()
    saved = first.read_bytes()
    assert cli(*argv) == 0
    assert (tmp_path / "content_style-2.png").is_file()
    assert first.read_bytes() == saved
    assert cli(*argv) == 0
    assert (tmp_path / "content_style-3.png").is_file()


def test_a_default_output_name_taken_during_the_run_is_not_replaced(images, tmp_path, monkeypatch, capsys):
    """Two runs with the same inputs in one folder both picked content_style.png at their start,
    and the later to finish replaced the other's picture. Now the result takes the next free name."""
    import pastiche.cli as cli_module

    def run_beside_another(job, schedule, **kwargs):
        Path("content_style.png").write_bytes(b"the other run's picture")
        return pastiche.schedule.run(job, schedule, **kwargs)
    monkeypatch.setattr(cli_module, "run", run_beside_another)
    assert cli("-c", "content.png", "-s", "style.png", "--num-steps", 2, "--size", 32, *SHALLOW) == 0
    assert Path("content_style.png").read_bytes() == b"the other run's picture"
    assert pixels("content_style-2.png").shape == (27, 32, 3)
    assert capsys.readouterr().out.endswith("wrote content_style-2.png\n")
    assert sorted(os.listdir(tmp_path)) == ["content.png", "content_style-2.png", "content_style.png", "style.png"]


def test_a_default_output_name_taken_by_a_link_or_a_folder_is_passed_over(images, tmp_path, monkeypatch, capsys):
    """A link leading nowhere at the default name made the run loop for ever at its end (the name
    looked free, yet could not be taken); a folder made there meanwhile lost the picture to /tmp."""
    import pastiche.cli as cli_module

    os.symlink(tmp_path / "gone.png", "content_style.png")

    def run_beside_another(job, schedule, **kwargs):
        os.mkdir("content_style-2.png")
        return pastiche.schedule.run(job, schedule, **kwargs)
    monkeypatch.setattr(cli_module, "run", run_beside_another)
    assert cli("-c", "content.png", "-s", "style.png", "--num-steps", 1, "--size", 32, *SHALLOW) == 0
    assert capsys.readouterr().out.endswith("wrote content_style-3.png\n")
    assert os.readlink("content_style.png") == str(tmp_path / "gone.png") and os.path.isdir("content_style-2.png")
    assert pixels("content_style-3.png").shape == (27, 32, 3)


def test_a_default_output_name_from_long_input_names_fits_the_filesystem(images, tmp_path):
    """A 240-byte content name and a 200-byte style name made a 442-byte default: a traceback."""
    os.rename("content.png", "c" * 240 + ".png")
    os.rename("style.png", "s" * 200 + ".png")
    assert cli("-c", "c" * 240 + ".png", "-s", "s" * 200 + ".png", "--num-steps", 1, "--size", 32, "--no-verbose",
               *SHALLOW) == 0
    assert os.path.isfile("c" * 200 + ".png")


def test_no_bar_and_no_failure_with_stderr_closed(images, tmp_path, monkeypatch):
    """`2>&-` leaves sys.stderr None: asking it isatty() failed the run (exit 1, nothing written)."""
    monkeypatch.setattr(sys, "stderr", None)
    assert cli("-c", "content.png", "-s", "style.png", "-o", "out.png", "--num-steps", 1, "--size", 32, *SHALLOW) == 0
    assert os.path.isfile("out.png")


def test_a_workspace_frame_that_cannot_be_written_names_the_workspace(images, tmp_path, monkeypatch, capsys):
    import pastiche.imageio as imageio

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(imageio, "atomic_file", full)  # every write fails: the disk is full
    code = cli("-c", "content.png", "-s", "style.png", "-o", "out.png", "--num-steps", 2, "--size", 32,
               "--workspace", "ws", "--no-verbose", *SHALLOW)
    assert code == 1 and capsys.readouterr().err == (
        "pastiche: error: cannot write output 'ws/0.png': the disk is full; free some space or choose another"
        " --workspace\n")


def test_default_output_name_with_two_styles(images, tmp_path):
    content, style = images
    other = tmp_path / "other.png"
    Image.fromarray(np.full((40, 40, 3), (200, 60, 90), np.uint8)).save(other)
    assert cli("-c", content, "-s", style, "-s", other, "--num-steps", 1, "--size", 32, "--no-verbose",
               *SHALLOW) == 0
    assert (tmp_path / "content_style+other.png").is_file()


@pytest.mark.parametrize("name, check", [
    ("out.jpg", lambda b: b[:3] == b"\xff\xd8\xff"),
    ("out.JPEG", lambda b: b[:3] == b"\xff\xd8\xff"),
    ("out.webp", lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP"),
    ("out.tif", lambda b: b[:4] in (b"II*\x00", b"MM\x00*")),
    ("out.png", lambda b: b[:8] == b"\x89PNG\r\n\x1a\n"),
])
def test_output_format_follows_the_extension(images, tmp_path, name, check):
    content, style = images
    assert cli("-c", content, "-s", style, "-o", name, "--num-steps", 1, "--size", 32, "--no-verbose",
               *SHALLOW) == 0
    assert check((tmp_path / name).read_bytes())
    with Image.open(tmp_path / name) as im:
        assert im.size == (32, 27)


@pytest.mark.parametrize("prefix", ["", "frame_"])
def test_workspace_frames_are_named_like_pastiche_1_6_0(images, tmp_path, prefix):
    content, style = images
    workspace = tmp_path / "ws" / "deeper"  # created as needed
    argv = ["-c", content, "-s", style, "-o", "out.png", "--num-steps", 12, "--size", 32, "--no-verbose",
            "--workspace", workspace, "--workspace-step", 5, *SHALLOW]
    if prefix:
        argv += ["--workspace-prefix", prefix]
    assert cli(*argv) == 0
    names = sorted(p.name for p in workspace.iterdir())
    num_steps, step = 12, 5
    expected = [f"{prefix}{k:0{len(str(num_steps))}d}.png" for k in range(0, num_steps + 1, step)]
    assert expected == [f"{prefix}00.png", f"{prefix}05.png", f"{prefix}10.png"]
    assert names == expected
    frames = [pixels(workspace / n) for n in names]
    assert all(f.shape == (27, 32, 3) for f in frames)
    assert not np.array_equal(frames[0], frames[-1])  # the image changed between frames
    # Frame 0 is the starting image: the content itself (default init).
    start = np.asarray(Image.open(content).convert("RGB").resize((32, 27), Image.BILINEAR))
    assert np.abs(frames[0].astype(int) - start).max() <= 1


def test_workspace_frames_of_every_level_are_at_the_output_size(images):
    content, style = images  # 80x67 px, after one coarse level at 40x34
    assert cli("-c", content, "-s", style, "-o", "out.png", "--size", 80, "--schedule", 4, "--num-steps", 4,
               "--no-verbose", "--workspace", "ws", "--workspace-step", 2, *SHALLOW) == 0
    names = sorted(os.listdir("ws"))
    assert names == ["0.png", "2.png", "4.png", "6.png", "8.png"]
    assert [Image.open(os.path.join("ws", n)).size for n in names] == [Image.open("out.png").size] * 5 == [(80, 67)] * 5


def test_schedule_none_runs_the_output_size_only(images, capsys):
    argv = [a for a in _argv({"--size": "80", "--schedule": "none"}) if a != "--no-verbose"]
    assert cli(*argv) == 0
    assert "schedule: 80x67 px 2 steps\n" in capsys.readouterr().out


def test_list_layers_prints_37_numbered_names(capsys):
    assert cli("--list-layers") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 37
    parsed = [re.fullmatch(r"\s*(\d+)\. (\w+)", line) for line in lines]
    assert all(parsed), lines
    assert [int(m.group(1)) for m in parsed] == list(range(37))
    assert tuple(m.group(2) for m in parsed) == LAYER_NAMES
    assert LAYER_NAMES[0] == "block1_conv1" and LAYER_NAMES[-1] == "block5_pool"


def test_version(capsys):
    assert cli("--version") == 0
    assert capsys.readouterr().out.strip() == f"pastiche {pastiche.__version__}"


def test_help_states_each_default_once_and_no_empty_ones(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "1000")  # an option's help on its line or the next
    assert cli("--help") == 0
    text = capsys.readouterr().out
    for empty in ("(default: None)", "(default: True)", "(default: False)", "(default: [])", "(default: )"):
        assert empty not in text
    lines = {}  # option → its whole entry
    for line in text.split("options:")[1].splitlines():
        if line.startswith("  -"):
            option = line.split()[0]
            lines[option] = line
        elif line.startswith("    ") and lines:
            lines[option] += line
    assert all(line.count("default") <= 1 for line in lines.values()), text
    assert "default 100,100,30, none with --init" in lines["--schedule"] and "(default: lbfgs)" in lines["--optimizer"]
    assert "default: block4_relu2;" in lines["--content-layers"]
    assert ".bmp" in lines["--output"] and ".webp" in lines["--output"]


# ---------------------------------------------------------------------------- bad input


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "adir").mkdir()
    (tmp_path / "notes.jpg").write_text("this is not a picture\n")
    buffer = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buffer, quality=90)
    data = buffer.read_bytes()
    buffer.unlink()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (1000, 1), "red").save(tmp_path / "sliver.png")  # 1 px high at any size
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    Image.new("RGB", (40, 30), "gray").save(tmp_path / "start.gif")  # an init image, nothing else
    (tmp_path / "frames").mkdir()
    Image.new("RGB", (40, 30), "gray").save(tmp_path / "frames" / "0.png")  # named as a frame
    return tmp_path


BAD_INPUTS = {
    "missing content": ({"-c": "missing.png"}, ["missing.png"]),
    "directory as style": ({"-s": ["adir"]}, ["adir", "directory"]),
    "text file named .jpg": ({"-s": ["notes.jpg"]}, ["notes.jpg"]),
    "truncated jpeg": ({"-c": "cut.jpg"}, ["cut.jpg"]),
    "missing init": ({"--init": "noinit.png"}, ["noinit.png"]),
    "unknown layer": ({"--style-layers": ["block1_relu1", "block9_relu9"]}, ["block9_relu9", "--list-layers"]),
    "wrong-length layer weights": ({"--style-layers": ["block1_relu1", "block2_relu1"],
                                    "--style-layer-weights": ["1"]}, ["--style-layer-weights"]),
    "wrong-length style weights": ({"--style-weights": ["0.5", "0.5"]}, ["--style-weights"]),
    "negative tv weight": ({"--tv-weight": "-1"}, ["--tv-weight", "-1.0"]),
    "nan content weight": ({"--content-weight": "nan"}, ["--content-weight", "nan"]),
    "zero steps": ({"--num-steps": "0"}, ["--num-steps"]),
    "negative size": ({"--size": "-5"}, ["--size"]),
    "size beyond memory": ({"--size": "100000"}, ["100000x", "GB", "--size"]),
    "too small": ({"--size": "8", "--content-layers": ["block4_relu2"]},
                  ["content image 'content.png' is too small", "--size or --size-pixels"]),
    "style too small": ({"--style-size": "2", "--content-layers": ["block4_relu2"]},
                        ["style image 'style.png' is too small", "--style-size"]),
    "second style too small": ({"-s": ["style.png", "sliver.png"]}, ["style image 2 'sliver.png'", "--style-size"]),
    "fps not positive": ({"--workspace": "ws", "--video": "v.gif", "--fps": "0"}, ["--fps", "0"]),
    "workspace prefix is a path": ({"--workspace": "ws", "--workspace-prefix": "a/b"}, ["--workspace-prefix", "a/b"]),
    "no such output dir": ({"-o": "nodir/out.png"}, ["nodir"]),
    "unknown extension": ({"-o": "out.xyz"}, [".xyz"]),
    "absent device": ({"--device": "cuda:99"}, ["cuda:99"]),
    "colour options clash": ({"--preserve-color": None, "--luminance-only": None},
                             ["--preserve-color", "--luminance-only"]),
    "output is the content": ({"-o": "content.png"}, ["content.png"]),
    "output is the style": ({"-o": "./style.png"}, ["style.png"]),
    "output is a directory": ({"-o": "adir"}, ["adir"]),
    "workspace is a file": ({"--workspace": "content.png"}, ["--workspace", "content.png", "not a folder"]),
    "supplemental index out of range": ({"--supplemental-device": ["cpu", "99"]}, ["--supplemental-device", "99"]),
    "supplemental index a superscript": ({"--supplemental-device": ["cpu", "²"]}, ["--supplemental-device", "²"]),
    "supplemental index past the deepest layer": ({"--supplemental-device": ["cpu", "36"]},
                                                  ["layer index 36 is past block2_relu1 (6)", "1 to 6"]),
    "supplemental index 0": ({"--supplemental-device": ["cpu", "0"]}, ["layer 0 is where --device starts"]),
    "supplemental index twice": ({"--supplemental-device": ["cpu", "3", "--supplemental-device", "cpu", "3"]},
                                 ["--supplemental-device layer index 3 is given twice"]),
    "supplemental device absent": ({"--supplemental-device": ["cuda:99", "3"]},
                                   ["device 'cuda:99' is not available", "(choose one with --supplemental-device)"]),
    "missing weights file": ({"--weights": "nope.pqw"}, ["nope.pqw"]),
    "unknown weights name": ({"--weights": "vgg19-2bit"}, ["vgg19-2bit", "vgg19-8bit, vgg19-4bit"]),
    "weights is a directory": ({"--weights": "adir"}, ["adir", "directory"]),
    "content is a loop of links": ({"-c": "loop1"}, ["loop1", "loop"]),
    "init is a loop of links": ({"--init": "loop2"}, ["loop2", "loop"]),
    "output name too long": ({"-o": "x" * 300 + ".png"}, ["304 bytes", "shorter --output"]),
    "output under a file": ({"-o": "content.png/out.png"}, ["'content.png' is a file"]),
    "seed out of range": ({"--seed": str(2 ** 64)}, ["--seed", str(2 ** 64)]),
    "learning rate beyond float32": ({"--learning-rate": "1e39"}, ["--learning-rate"]),
    "bad schedule with --single-scale": ({"--single-scale": None, "--schedule": "abc"}, ["--schedule 'abc'"]),
    "every loss weight 0": ({"--content-weight": "0", "--style-weights": "0"}, ["weighted 0"]),
    # the workspace is made only once every input is known to be good
    "workspace, content missing": ({"--workspace": "ws/deep", "-c": "missing.png"}, ["missing.png"]),
    "workspace, image too small": ({"--workspace": "ws", "--size": "8", "--content-layers": ["block4_relu2"]},
                                   ["too small"]),
    "workspace, absent device": ({"--workspace": "ws", "--device": "cuda:99"}, ["cuda:99"]),
    "layer deeper than the weights hold": ({"--weights": "vgg19-4bit", "--style-layers": ["block5_relu2"]},
                                           ["vgg19-4bit", "block5_relu2", "vgg19-8bit"]),
    # an input or output that a frame, the video or the workspace itself would replace
    "video is the init": ({"--init": "start.gif", "--workspace": "ws", "--video": "start.gif"},
                          ["refusing to overwrite input 'start.gif'", "--video"]),
    "a frame is the content": ({"-c": "frames/0.png", "--workspace": "frames"},
                               ["a --workspace frame would be the same file as content image 'frames/0.png'"]),
    "a frame is the output": ({"-o": "adir/0.png", "--workspace": "adir"}, ["--output 'adir/0.png'"]),
    "workspace is the output": ({"--workspace": "out.png"}, ["--workspace 'out.png' is also the --output file"]),
    "workspace is the video": ({"--workspace": "v.gif", "--video": "v.gif"},
                               ["--workspace 'v.gif' is also the --video file"]),
    "a video's output is the unused init": ({"-c": "clip.mp4", "--random-init": None, "--init": "start.gif",
                                             "-o": "start.gif"}, ["refusing to overwrite input 'start.gif'"]),
    # options that would do nothing here (they were ignored without a word)
    "fps without video": ({"--fps": "5"}, ["--fps is the frame rate of --video; give --video FILE too"]),
    "frame steps for an image": ({"--frame-steps": "5"}, ["--frame-steps is for a video --content"]),
    "no flow for an image": ({"--no-flow": None}, ["--no-flow is for a video --content"]),
    # an empty value ("$DIR" with DIR unset) is a mistake, not the option left out
    "empty content": ({"-c": ""}, ["--content is empty; give a file name"]),
    "empty output": ({"-o": ""}, ["--output is empty; give a file name, or leave --output out"]),
    "empty init": ({"--init": ""}, ["--init is empty"]),
    "empty workspace": ({"--workspace": ""}, ["--workspace is empty; give a folder name"]),
    "empty video": ({"--workspace": "ws", "--video": ""}, ["--video is empty"]),
    "empty weights": ({"--weights": ""}, ["--weights is empty; give one of vgg19-8bit"]),
}


def _argv(overrides):
    options = {"-c": "content.png", "-s": ["style.png"], "-o": "out.png", "--num-steps": "2",
               "--size": "32", "--no-verbose": None,
               "--content-layers": ["block2_relu1"], "--style-layers": ["block1_relu1", "block2_relu1"]}
    options.update(overrides)
    argv = []
    for flag, value in options.items():
        argv.append(flag)
        argv += [] if value is None else value if isinstance(value, list) else [value]
    return argv


@pytest.mark.parametrize("overrides, needles", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
@pytest.mark.parametrize("existing_output", [False, True], ids=["fresh", "existing"])
def test_bad_input_fails_cleanly(images, bad_files, tmp_path, capsys, overrides, needles, existing_output):
    if existing_output:
        (tmp_path / "out.png").write_bytes(b"precious")
    before = snapshot(tmp_path)
    code = cli(*_argv(overrides))
    captured = capsys.readouterr()
    assert code not in (0, None)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("pastiche: error:")
    assert "Traceback" not in captured.err + captured.out
    for needle in needles:
        assert needle in lines[0]
    assert snapshot(tmp_path) == before  # nothing written, nothing clobbered, no temp file left


class _ClosedPipe(io.TextIOBase):
    """stdout after ``| head -1`` has gone: every write fails."""

    def write(self, text):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


@pytest.mark.parametrize("overrides, needle", [({"--size": "8", "--content-layers": ["block4_relu2"]}, "too small"),
                                               ({"--workspace": "content.png"}, "not a folder")])
def test_an_input_error_found_at_the_first_level_prints_no_progress_first(images, capsys, overrides, needle):
    code = cli(*[a for a in _argv(overrides) if a != "--no-verbose"])
    captured = capsys.readouterr()
    assert code == 1 and needle in captured.err and captured.out == ""


def test_a_style_too_small_only_at_a_coarse_level_names_the_schedule(images, capsys):
    assert cli(*_argv({"--size": "96", "--style-size": "12", "--schedule": "2", "--content-layers": ["block4_relu2"]})) == 1
    assert "or fewer coarse levels (--schedule)" in capsys.readouterr().err


def test_video_without_pyav_is_refused_before_the_run(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "av", None)
    before = snapshot(tmp_path)
    assert cli(*_argv({"--workspace": "ws", "--video": "film.mp4"})) == 1
    assert "needs PyAV" in capsys.readouterr().err and snapshot(tmp_path) == before


def test_an_init_image_runs_at_the_output_size_unless_a_schedule_is_given(images, tmp_path, capsys):
    content, style = images
    for extra, levels in (([], "96x80 px 2 steps"), (["--schedule", "1"], "48x40 px 1 steps, 96x80 px 2 steps")):
        assert cli("-c", content, "-s", style, "--init", style, "--size", 96, "--num-steps", 2,
                   "-o", tmp_path / "o.png", *SHALLOW, *extra) == 0
        assert f"schedule: {levels}\n" in capsys.readouterr().out
    assert cli("-c", content, "-s", style, "--size", 96, "--num-steps", 2, "--schedule", "1", "-o",
               tmp_path / "p.png", *SHALLOW) == 0  # from the content: coarse to fine, as by default
    assert "schedule: 48x40 px 1 steps, 96x80 px 2 steps\n" in capsys.readouterr().out


def test_a_closed_stdout_loses_the_progress_not_the_run(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    argv = [a for a in _argv({"--info-step": "1", "--num-steps": "3"}) if a != "--no-verbose"]
    assert cli(*argv) == 0 and Image.open(tmp_path / "out.png").size[0] == 32
    assert capsys.readouterr().err.splitlines() == ["pastiche: cannot print progress (Broken pipe); going on"
                                                     " without it"]


def test_an_output_format_too_small_for_the_image_is_refused_before_the_run(tmp_path, style_path, monkeypatch,
                                                                            capsys):
    """WebP holds 16,383 px a side: a 16,400 px wide run to .webp used to fail at its end, in
    the encoder, with the picture lost."""
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (16400, 4), "gray").save("wide.png")
    monkeypatch.setattr(StyleTransfer, "step", lambda job: pytest.fail("a step ran"))
    assert cli("-c", "wide.png", "-s", style_path, "-o", "wide.webp", "--size", 16400, *SHALLOW) == 1
    assert capsys.readouterr().err.splitlines() == [
        "pastiche: error: cannot write output 'wide.webp': a .webp file holds at most 16383 px a side and the"
        " image is 16400x4 px; choose a .png or .tif --output, or a smaller --size or --size-pixels"]
    assert sorted(os.listdir()) == sorted(["wide.png", os.path.basename(style_path)])  # nothing written


@pytest.mark.parametrize("stop", ["end", "ctrl-c", "nan", "no spare"])
def test_a_result_that_cannot_be_written_at_the_end_is_kept_in_the_temporary_folder(images, tmp_path, monkeypatch,
                                                                                   capsys, stop):
    """The disk fills up during the run: the finished (interrupted, stopped) picture goes to a new
    file in the temporary folder, which the message names, instead of being lost; where that
    fails too, the first error stands."""
    spares = tmp_path / ("spares" if stop != "no spare" else "missing")
    (tmp_path / "spares").mkdir()
    (tmp_path / "spares" / "pastiche-out-x.png").symlink_to(tmp_path / "content.png")  # left alone
    monkeypatch.setattr(tempfile, "tempdir", str(spares))
    save = Image.Image.save

    def full_disk(self, fp, *args, **kwargs):
        if os.path.dirname(fp.name) == os.path.realpath(tmp_path):  # the output's folder, not the spares'
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk)
    if stop == "ctrl-c":
        _record_steps(monkeypatch, interrupt_at=2)
    if stop == "nan":
        objective = StyleTransfer.objective
        monkeypatch.setattr(StyleTransfer, "objective", lambda job, x, **kw: objective(job, x, **kw)
                            * (float("nan") if job.step_count >= 1 else 1))
    content = (tmp_path / "content.png").read_bytes()
    code = cli(*_argv({"--num-steps": "3"}))
    failure = "cannot write output 'out.png': the disk is full; free some space or choose another --output"
    new = sorted(set(os.listdir(tmp_path / "spares")) - {"pastiche-out-x.png"})
    if stop == "no spare":
        assert code == 1 and new == []
        assert capsys.readouterr().err.splitlines() == [f"pastiche: error: {failure}"]
        return
    assert len(new) == 1 and re.fullmatch(r"pastiche-out-\w+\.png", new[0])
    spare = tmp_path / "spares" / new[0]
    assert Image.open(spare).size == (32, 27) and not (tmp_path / "out.png").exists()
    assert (tmp_path / "content.png").read_bytes() == content  # the link laid there was not followed
    first = {"end": "pastiche: error: ", "ctrl-c": "pastiche: interrupted at step 1; ",
             "nan": "pastiche: error: the loss or its step became nan at step 2; kept the last good image — try"
                    " smaller weights or --learning-rate; "}[stop]
    assert capsys.readouterr().err.splitlines() == [f"{first}{failure}; the picture is kept in {spare}"]
    assert code == (130 if stop == "ctrl-c" else 1)


@pytest.mark.parametrize("link", ["a frame links to the style", "the style links to a frame",
                                  "the output links to a frame"])
def test_links_do_not_let_a_workspace_frame_replace_an_input_or_the_output(images, tmp_path, capsys, link):
    (tmp_path / "ws").mkdir()
    if link == "a frame links to the style":
        (tmp_path / "ws" / "0.png").symlink_to(tmp_path / "style.png")
        argv, what = _argv({"--workspace": "ws"}), "style image 'style.png'"
    elif link == "the style links to a frame":
        Image.open(tmp_path / "style.png").save(tmp_path / "ws" / "0.png")
        (tmp_path / "mine.png").symlink_to(tmp_path / "ws" / "0.png")
        argv, what = _argv({"--workspace": "ws", "-s": ["mine.png"]}), "style image 'mine.png'"
    else:
        (tmp_path / "out.png").symlink_to(tmp_path / "ws" / "0.png")
        argv, what = _argv({"--workspace": "ws"}), "--output 'out.png'"
    before = snapshot(tmp_path)
    assert cli(*argv) == 1
    assert capsys.readouterr().err.splitlines() == [f"pastiche: error: a --workspace frame would be the same file as"
                                                    f" {what}; choose another --workspace or --workspace-prefix"]
    assert snapshot(tmp_path) == before


def test_an_unwritable_workspace_is_named_before_the_run(images, tmp_path, monkeypatch, capsys):
    (tmp_path / "ws").mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: "ws" not in str(p) and access(p, mode, **k))  # root
    assert cli(*_argv({"--workspace": "ws"})) == 1
    assert capsys.readouterr().err.splitlines() == ["pastiche: error: --workspace 'ws' is not writable;"
                                                     " choose another folder"]
    assert not (tmp_path / "out.png").exists()


def test_unknown_flag_is_an_argparse_error(images, capsys):
    assert cli("-c", "content.png", "-s", "style.png", "--no-such-flag") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--no-such-flag" in err[0]


def test_missing_content_option(images, capsys):
    assert cli("-s", "style.png", "--num-steps", 1, "--size", 32) not in (0, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--content" in err[0]


# ---------------------------------------------------------------------------- interruptions


def _record_steps(monkeypatch, interrupt_at=None):
    """Patch StyleTransfer.step to remember the image after each step (and to raise
    KeyboardInterrupt on call number ``interrupt_at``)."""
    original, calls, frames = StyleTransfer.step, [], []

    def step(self):
        calls.append(1)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        loss = original(self)
        frames.append(np.asarray(self.image()))
        return loss

    monkeypatch.setattr(StyleTransfer, "step", step)
    return frames


def test_ctrl_c_saves_the_latest_image_and_exits_130(images, tmp_path, monkeypatch, capsys):
    frames = _record_steps(monkeypatch, interrupt_at=3)
    out = tmp_path / "out.png"
    code = cli("-c", "content.png", "-s", "style.png", "-o", out, "--num-steps", 10, "--size", 32,
               "--no-verbose", "--device", "cpu", *SHALLOW)  # poisons eager steps
    captured = capsys.readouterr()
    assert code == 130
    assert len(frames) == 2
    assert out.is_file()
    assert np.array_equal(pixels(out), frames[-1])
    assert "Traceback" not in captured.err
    assert "interrupt" in captured.err.lower()


def test_ctrl_c_with_video_says_how_to_join_the_frames(images, tmp_path, monkeypatch, capsys):
    _record_steps(monkeypatch, interrupt_at=3)
    assert cli(*_argv({"--num-steps": "5", "--workspace": "ws", "--workspace-step": "1", "--video": "film.gif"})) == 130
    assert capsys.readouterr().err.splitlines() == [
        "pastiche: interrupted at step 2; saved out.png; no --video made (pastiche-video ws -o film.gif joins the"
        " frames)"]
    assert sorted(os.listdir("ws")) == ["0.png", "1.png", "2.png"] and not os.path.exists("film.gif")


def test_sigterm_saves_the_latest_image_like_ctrl_c(images, tmp_path, monkeypatch, capsys):
    frames, original = [], StyleTransfer.step

    def step(self):
        if len(frames) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a scheduler's time limit would
        loss = original(self)
        frames.append(np.asarray(self.image()))
        return loss

    monkeypatch.setattr(StyleTransfer, "step", step)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out.png"
    code = cli("-c", "content.png", "-s", "style.png", "-o", out, "--num-steps", 10, "--size", 32,
               "--no-verbose", *SHALLOW)
    assert code == 130
    assert capsys.readouterr().err == f"pastiche: interrupted at step 2; saved {out}\n"
    assert len(frames) == 2 and np.array_equal(pixels(out), frames[-1])
    assert signal.getsignal(signal.SIGTERM) is before  # the command's handler does not outlive it


def _interrupt_on_saving(monkeypatch, name, sig=signal.SIGINT):
    """Patch the CLI's save_image to send ``sig`` to this process as it starts writing ``name``."""
    original = cli_module.save_image

    def save(image, path, **options):
        if os.path.basename(path) == name:
            os.kill(os.getpid(), sig)
        return original(image, path, **options)
    monkeypatch.setattr(cli_module, "save_image", save)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_while_the_finished_picture_is_saved_still_saves_it(images, tmp_path, monkeypatch, capsys, sig):
    """It was lost: the interrupt cut the write short and the run said only "interrupted"."""
    frames = _record_steps(monkeypatch)
    _interrupt_on_saving(monkeypatch, "out.png", sig)
    code = cli("-c", "content.png", "-s", "style.png", "-o", tmp_path / "out.png", "--num-steps", 3, "--size", 32,
               "--no-verbose", *SHALLOW)
    assert code == 130 and capsys.readouterr().err == f"pastiche: interrupted at step 3; saved {tmp_path / 'out.png'}\n"
    assert np.array_equal(pixels(tmp_path / "out.png"), frames[-1])
    assert sorted(os.listdir(tmp_path)) == ["content.png", "out.png", "style.png"]  # no temporary file left


def test_a_second_ctrl_c_while_the_interrupted_run_saves_its_picture_is_held(images, tmp_path, monkeypatch, capsys):
    frames = _record_steps(monkeypatch, interrupt_at=3)
    _interrupt_on_saving(monkeypatch, "out.png")
    code = cli("-c", "content.png", "-s", "style.png", "-o", tmp_path / "out.png", "--num-steps", 5, "--size", 32,
               "--no-verbose", *SHALLOW)
    assert code == 130 and capsys.readouterr().err == f"pastiche: interrupted at step 2; saved {tmp_path / 'out.png'}\n"
    assert np.array_equal(pixels(tmp_path / "out.png"), frames[-1])


def test_ctrl_c_while_the_video_is_made_says_the_picture_is_saved(images, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **options):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli_module, "frames_to_video", interrupted)
    assert cli(*_argv({"--workspace": "ws", "--video": "film.gif"})) == 130
    assert capsys.readouterr().err.splitlines() == [
        "pastiche: interrupted at step 2; saved out.png; no --video made (pastiche-video ws -o film.gif joins the"
        " frames)"]
    assert os.path.isfile("out.png") and not os.path.exists("film.gif")


def test_ctrl_c_before_the_first_step_writes_nothing(images, tmp_path, monkeypatch, capsys):
    """As a NaN at the first step: the starting image is no result (it was written as one)."""
    def interrupted(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(StyleTransfer, "step", interrupted)
    (tmp_path / "out.png").write_bytes(b"an earlier result")
    code = cli("-c", "content.png", "-s", "style.png", "-o", tmp_path / "out.png", "--num-steps", 3, "--size", 32,
               "--no-verbose", *SHALLOW)
    assert code == 130 and (tmp_path / "out.png").read_bytes() == b"an earlier result"
    assert capsys.readouterr().err == "pastiche: interrupted before the first step was done; no output written\n"


def test_an_ignored_sigterm_stays_ignored(images, tmp_path, monkeypatch, capsys):
    """A launcher that ignores SIGTERM (as nohup ignores SIGHUP) means the run to go on."""
    original = StyleTransfer.step

    def step(self):
        if self.step_count == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self)
    monkeypatch.setattr(StyleTransfer, "step", step)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        code = cli("-c", "content.png", "-s", "style.png", "-o", tmp_path / "out.png", "--num-steps", 3,
                   "--size", 32, "--no-verbose", *SHALLOW)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 0 and capsys.readouterr().err == ""


def test_nan_loss_fails_and_keeps_the_last_good_image(images, tmp_path, monkeypatch, capsys):
    frames = _record_steps(monkeypatch)
    objective = StyleTransfer.objective

    def poisoned(self, pixels_, **kw):
        loss = objective(self, pixels_, **kw)
        return loss * float("nan") if self.step_count >= 2 else loss  # NaN from step 3 on

    monkeypatch.setattr(StyleTransfer, "objective", poisoned)
    out = tmp_path / "out.png"
    code = cli("-c", "content.png", "-s", "style.png", "-o", out, "--num-steps", 10, "--size", 32,
               "--no-verbose", "--device", "cpu", *SHALLOW)  # poisons eager steps
    captured = capsys.readouterr()
    assert code not in (0, None)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    assert "nan" in lines[0].lower() and "step 3" in lines[0] and lines[0].endswith(f"; saved {out}")
    assert len(frames) == 2
    assert out.is_file()
    # The last image whose loss was finite: the loss of step 2 is that of the image after step 1.
    assert np.array_equal(pixels(out), frames[0])


def test_a_nan_loss_at_the_first_step_writes_nothing(images, tmp_path, monkeypatch, capsys):
    """The starting image is not a result: a previous run's output stays as it was (a weights file
    or a style weight that makes every loss NaN had replaced it with the content image)."""
    objective = StyleTransfer.objective
    monkeypatch.setattr(StyleTransfer, "objective",
                        lambda self, pixels_, **kw: objective(self, pixels_, **kw) * float("nan"))
    out = tmp_path / "out.png"
    out.write_bytes(b"a previous result")
    code = cli("-c", "content.png", "-s", "style.png", "-o", out, "--num-steps", 10, "--size", 32,
               "--no-verbose", "--device", "cpu", *SHALLOW)
    assert code == 1 and out.read_bytes() == b"a previous result"
    assert capsys.readouterr().err == ("pastiche: error: the loss or its step became nan at step 1 (the first; the"
                                       " image is the starting one) — try smaller weights or --learning-rate;"
                                       " nothing written\n")


def test_out_of_memory_fails_and_keeps_the_latest_image(images, tmp_path, monkeypatch, capsys):
    frames = _record_steps(monkeypatch)
    objective = StyleTransfer.objective

    def starved(self, pixels_, **kw):
        if self.step_count >= 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 TB")
        return objective(self, pixels_, **kw)

    monkeypatch.setattr(StyleTransfer, "objective", starved)
    out = tmp_path / "out.png"
    code = cli("-c", "content.png", "-s", "style.png", "-o", out, "--num-steps", 10, "--size", 32,
               "--no-verbose", "--device", "cpu", *SHALLOW)  # poisons eager steps
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err == ("pastiche: error: out of memory at 32x27 px on cpu; choose a smaller --size"
                            f" or --size-pixels, or --low-memory; saved {out}\n")
    assert len(frames) == 2 and np.array_equal(pixels(out), frames[-1])


# ---------------------------------------------------------------------------- pastiche 1.6.0


def test_pastiche_1_6_0_command_line(images, tmp_path, capsys):
    other = tmp_path / "style2.png"
    Image.fromarray(np.asarray(Image.open(images[1]))[:, ::-1]).save(other)
    code = cli("-c", "content.png", "-s", "style.png", "style2.png", "-o", "out.png", "--num-steps", 2,
               "--content-layers", "block4_relu2", "--style-layers", "block1_relu1", "block2_relu1",
               "--content-layer-weights", 0.01, "--style-layer-weights", 1, 1, "--content-weight", 1,
               "--style-weights", 0.5, 0.5, "--tv-weight", 0, "--optimizer", "adam", "--pooling", "avg",
               "--size", 32, "--style-size", 32, "--seed", 1, "--deterministic", "--device", "cpu",
               "--info-step", 1, "--no-verbose", "--workspace", "W", "--workspace-step", 1,
               "--workspace-prefix", "p_")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == ""
    assert (tmp_path / "out.png").is_file()
    assert sorted(p.name for p in (tmp_path / "W").iterdir()) == ["p_0.png", "p_1.png", "p_2.png"]


@pytest.mark.parametrize("extra", [
    ["--init", "init.png"],
    ["--random-init"],
    ["--random-init", "--init", "init.png"],
    ["--size-pixels", 1024],
    ["--size", 32, "--style-size-pixels", 1024],
    ["--size", 32, "--preserve-color"],
    ["--size", 32, "--luminance-only"],
    ["--size", 32, "--supplemental-device", "cpu", 5],
    ["--size", 32, "--optimizer", "lbfgs", "--learning-rate", 0.5, "--tv-weight", 1e-3],
    ["--size", 32, "--styles", "style.png", "--style-size", 40, "--pooling", "max"],
], ids=lambda extra: " ".join(map(str, extra)))
def test_pastiche_1_6_0_variants(images, tmp_path, capsys, extra):
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(tmp_path / "init.png")
    extra = list(extra)
    if "--size" not in extra and "--size-pixels" not in extra:
        extra += ["--size", 32]
    code = cli("-c", "content.png", "-s", "style.png", "-o", "out.png", "--num-steps", 2, "--seed", 3,
               "--no-verbose", *extra)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    with Image.open(tmp_path / "out.png") as im:
        w, h = im.size
    if "--size-pixels" in extra and "--size" not in extra:
        assert abs(w * h - 1024) < 64 and w > h
    else:
        assert (w, h) == (32, 27)


def test_seed_and_deterministic_repeat_exactly(images, tmp_path):
    argv = ["-c", "content.png", "-s", "style.png", "--num-steps", 3, "--size", 32, "--random-init",
            "--seed", 7, "--deterministic", "--no-verbose", *SHALLOW]
    assert cli(*argv, "-o", "a.png") == 0
    assert cli(*argv, "-o", "b.png") == 0
    assert np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png"))
