"""Tests for pastiche.files: the checks of paths read and written, and atomic writes."""

import errno
import os
import stat

import pytest

from pastiche.errors import PasticheError, command_line
from pastiche.files import atomic_file, check_readable, check_writable, output_path


def test_atomic_file_replaces_only_when_the_block_finishes(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise KeyboardInterrupt  # Ctrl-C mid-write: the old file stays, no temporary one is left
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]
    with atomic_file(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.bin"]


def test_atomic_file_gives_the_mode_open_would_and_writes_through_a_link(tmp_path):
    (tmp_path / "real.bin").write_bytes(b"old")
    os.chmod(tmp_path / "real.bin", 0o640)
    (tmp_path / "link.bin").symlink_to(tmp_path / "real.bin")
    with atomic_file(tmp_path / "link.bin") as tmp:
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert (tmp_path / "link.bin").is_symlink() and (tmp_path / "real.bin").read_bytes() == b"new"
    assert stat.S_IMODE((tmp_path / "real.bin").stat().st_mode) == 0o640  # the replaced file's, not mkstemp's 0600
    mask = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "fresh.bin") as tmp:
            pass
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "fresh.bin").stat().st_mode) == 0o644


def test_atomic_file_without_replace_leaves_a_name_taken_meanwhile(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(FileExistsError):
        with atomic_file(target, replace=False) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"mine")
            target.write_bytes(b"theirs")  # another process took the name while this one wrote
    assert target.read_bytes() == b"theirs" and os.listdir(tmp_path) == ["out.bin"]


def test_check_readable_names_the_problem_and_the_fix(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for name, message in (("missing.png", "no such file; check the path"),
                          ("", "it is a directory; pass an image file"),
                          ("pipe", "it is a pipe or a socket, not a file; pass an image file"),
                          ("loop", "its symbolic links form a loop; point them at a file")):
        with pytest.raises(PasticheError) as e:
            check_readable(tmp_path / name, "style image 'x'")
        assert str(e.value) == f"cannot read style image 'x': {message}"


def test_an_empty_output_path_is_refused_not_taken_for_the_current_folder(tmp_path, monkeypatch, capsys):
    """Path("") is "."; save_image(image, "") said "cannot write output '.': it is a directory"."""
    import numpy as np

    from pastiche import save_image, video

    assert output_path(tmp_path / "a.png") == tmp_path / "a.png"
    with pytest.raises(PasticheError, match="^output is empty; give a file name$"):
        save_image(np.zeros((2, 2, 3), np.uint8), "")
    with pytest.raises(PasticheError, match="^video is empty; give a file name$"):
        video.check_video_output("", option="video")
    with pytest.raises(PasticheError, match="^--output is empty; give a file name$"), command_line():
        check_writable("", inputs=[], kind="output", input_kind="input")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ws").mkdir()
    save_image(np.zeros((2, 2, 3), np.uint8), tmp_path / "ws" / "0.png")
    assert video.main(["ws", "-o", ""]) == 1
    assert capsys.readouterr().err == "pastiche-video: error: --output is empty; give a file name\n"


def test_check_writable_refuses_an_input_under_another_name(tmp_path):
    (tmp_path / "in.png").write_bytes(b"input")
    os.link(tmp_path / "in.png", tmp_path / "hard.png")
    with pytest.raises(PasticheError) as e:
        check_writable(tmp_path / "hard.png", inputs=[tmp_path / "in.png"], kind="output", input_kind="content image")
    assert str(e.value) == (f"refusing to overwrite content image '{tmp_path / 'in.png'}' with the output;"
                            " choose another output")
    assert check_writable(tmp_path / "new.png", inputs=[tmp_path / "in.png"], kind="output",
                          input_kind="content image") == tmp_path / "new.png"


def _write_new(path, data: bytes) -> None:
    """``data`` into a new file at ``path`` through atomic_file(replace=False)."""
    with atomic_file(path, replace=False) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def _then_interrupt(monkeypatch, name: str) -> None:
    """Make os.NAME do its work, then raise KeyboardInterrupt (Ctrl-C just after it)."""
    original = getattr(os, name)

    def call_then_interrupt(src, dst):
        original(src, dst)
        raise KeyboardInterrupt
    monkeypatch.setattr(os, name, call_then_interrupt)


def _no_hard_links(monkeypatch, code: int = errno.EPERM) -> None:
    def no_links(src, dst):
        raise OSError(code, os.strerror(code))  # EPERM: as Linux says on FAT; EINVAL: as Windows does
    monkeypatch.setattr(os, "link", no_links)


def test_atomic_file_without_replace_keeps_the_file_when_interrupted_after_it_is_in_place(tmp_path, monkeypatch):
    """Ctrl-C just after the rename had removed the finished file with the placeholder."""
    _then_interrupt(monkeypatch, "link")
    with pytest.raises(KeyboardInterrupt):
        _write_new(tmp_path / "out.bin", b"done")
    assert (tmp_path / "out.bin").read_bytes() == b"done" and os.listdir(tmp_path) == ["out.bin"]


def test_atomic_file_without_replace_where_there_are_no_hard_links(tmp_path, monkeypatch):
    _no_hard_links(monkeypatch)
    _write_new(tmp_path / "out.bin", b"mine")
    with pytest.raises(FileExistsError):
        _write_new(tmp_path / "out.bin", b"theirs")
    assert (tmp_path / "out.bin").read_bytes() == b"mine" and os.listdir(tmp_path) == ["out.bin"]


def test_an_interrupt_in_the_no_hard_links_fallback_leaves_no_empty_file_and_keeps_a_finished_one(
        tmp_path, monkeypatch):
    """Without hard links the name is taken by an empty file, then replaced: Ctrl-C before the
    replace removes that placeholder; Ctrl-C just after it keeps the file it finished."""
    _no_hard_links(monkeypatch, errno.EINVAL)
    replace = os.replace

    def interrupt_before(src, dst):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "replace", interrupt_before)
    with pytest.raises(KeyboardInterrupt):
        _write_new(tmp_path / "out.bin", b"done")
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(os, "replace", replace)
    _then_interrupt(monkeypatch, "replace")
    with pytest.raises(KeyboardInterrupt):
        _write_new(tmp_path / "out.bin", b"done")
    assert (tmp_path / "out.bin").read_bytes() == b"done" and os.listdir(tmp_path) == ["out.bin"]


def test_atomic_file_without_replace_writes_where_the_system_resolves_the_path(tmp_path):
    """dir/link/../out named the folder above the link's target, not dir (a lexical '..')."""
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "link").symlink_to(tmp_path / "real" / "sub")
    with atomic_file(tmp_path / "dir" / "link" / ".." / "out.bin", replace=False) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"mine")
    assert (tmp_path / "real" / "out.bin").read_bytes() == b"mine" and not (tmp_path / "dir" / "out.bin").exists()
