"""Video files in and out (pastiche.video) on tiny synthetic clips made with PyAV."""

from __future__ import annotations

import errno
import io
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clips import av, make_clip, needs_av, texture, write_frames
from pastiche import video
from pastiche.errors import PasticheError, PasticheWarning

# Most clips here come out with an odd side (48x32 at size 32: 32x21), which an MP4 crops with a
# note; the tests of that note catch it with pytest.warns
pytestmark = pytest.mark.filterwarnings("ignore::pastiche.errors.PasticheWarning")


def test_is_video():
    assert video.is_video("a.MP4") and video.is_video(Path("b.mov")) and video.is_video("c.webm")
    assert not video.is_video("a.png") and not video.is_video("a.gif") and not video.is_video(np.zeros(3))


@needs_av
def test_frames_to_mp4_round_trip(tmp_path):
    write_frames(tmp_path / "ws", [(48, 32)] * 5)
    out = video.frames_to_video([tmp_path / "ws"], tmp_path / "out.mp4", fps=12)
    info = video.probe(out)
    assert (info.frames, info.width, info.height, info.fps, info.has_audio) == (5, 48, 32, 12, False)
    assert info.codec == "h264"
    frames = list(video.read_frames(out))
    assert len(frames) == 5 and frames[0].size == (48, 32) and frames[0].mode == "RGB"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


@needs_av
def test_frames_to_gif_in_order_across_workspaces(tmp_path):
    first = write_frames(tmp_path / "a", [(40, 30)] * 3, name="frame{:d}.png")  # frame0..2
    second = write_frames(tmp_path / "b", [(40, 30)] * 9, start=3, name="frame{:d}.png")  # frame3..11
    out = video.frames_to_video([tmp_path / "a", tmp_path / "b"], tmp_path / "out.gif", fps=10)
    with Image.open(out) as gif:
        assert (gif.n_frames, gif.size, gif.info["duration"]) == (12, (40, 30), 100)
    decoded = [np.asarray(f).reshape(-1, 3).mean(0) for f in video.read_frames(out)]
    assert len(decoded) == 12
    for got, want in zip(decoded, first + second):  # natural order: frame10 after frame9
        assert np.abs(got - want).max() < 8


def test_a_gif_is_written_from_one_frame_in_memory_at_a_time(tmp_path, monkeypatch):
    """All frames were read into a list of RGB images first: 300 frames of 640x480 px took 1.1 GB
    (Pillow keeps them too, but converted to a byte a pixel)."""
    import weakref

    write_frames(tmp_path / "ws", [(40, 30)] * 6)
    read, most = [], 0

    def counted(source, **kwargs):
        nonlocal most
        image = open_image(source, **kwargs)
        read.append(weakref.ref(image))
        most = max(most, sum(r() is not None for r in read))
        return image
    open_image = video.open_image
    monkeypatch.setattr(video, "open_image", counted)
    with Image.open(video.frames_to_video(tmp_path / "ws", tmp_path / "o.gif")) as gif:
        assert gif.n_frames == 6
    # the last frame's size first, then each in turn: alive at once at most the first (the image
    # saved), the one before and the one being read, however many frames there are
    assert len(read) == 7 and most <= 3


@needs_av
def test_mixed_sizes_follow_last_frame_with_a_note(tmp_path):
    write_frames(tmp_path / "ws", [(12, 8), (24, 17), (47, 33)])
    with pytest.warns(PasticheWarning) as notes:
        mp4 = video.probe(video.frames_to_video(tmp_path / "ws", tmp_path / "o.mp4", fps=5))
    assert (mp4.frames, mp4.width, mp4.height) == (3, 46, 32)  # H.264 yuv420p needs even sides
    assert [str(n.message) for n in notes][-1] == (f"2 of 3 frames (the first '{tmp_path / 'ws' / '0.png'}') were"
                                                   f" resized to 47x33 px, the last frame's size, in"
                                                   f" '{tmp_path / 'o.mp4'}'")
    with pytest.warns(PasticheWarning, match="^2 of 3 frames .* resized to 47x33 px"):
        with Image.open(video.frames_to_video([tmp_path / "ws"], tmp_path / "o.gif")) as gif:
            assert (gif.n_frames, gif.size) == (3, (47, 33))


@needs_av
def test_bad_inputs_name_the_file(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(PasticheError, match="notes.mp4.*not a video"):
        video.probe(text)
    with pytest.raises(PasticheError, match="nope.mp4.*no such file"):
        list(video.read_frames(tmp_path / "nope.mp4"))
    empty = tmp_path / "empty.mkv"  # a header, no frames
    with av.open(str(empty), "w") as out:
        stream = out.add_stream("libx264", rate=12)
        stream.width = stream.height = 32
        out.start_encoding()
    with pytest.raises(PasticheError, match="empty.mkv.*no frames"):
        video.probe(empty)
    data = make_clip(tmp_path / "ok.mp4").read_bytes()
    (tmp_path / "odd.mp4").write_bytes(data.replace(b"avc1", b"zzzz"))  # a codec nobody decodes
    with pytest.raises(PasticheError, match="odd.mp4.*unsupported video codec"):
        list(video.read_frames(tmp_path / "odd.mp4"))
    (tmp_path / "ws").mkdir()
    with pytest.raises(PasticheError, match=r"^no frames in '.*ws': it holds no images; pass a folder of frames"
                                            r" \(as pastiche --workspace writes\) or image files$"):
        video.frames_to_video([tmp_path / "ws"], tmp_path / "o.mp4")


@needs_av
def test_unwritable_outputs_fail_before_work(tmp_path):
    write_frames(tmp_path / "ws", [(16, 16)] * 2)
    for bad, why in ((tmp_path / "missing" / "o.mp4", "does not exist"),
                     (tmp_path / "ws", "unsupported extension"), (tmp_path / "o.avi", "unsupported extension")):
        with pytest.raises(PasticheError, match=f"cannot write video '{bad}'.*{why}"):
            video.frames_to_video([tmp_path / "ws"], bad)
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(PasticheError, match="dir.mp4.*is a directory"):
        video.frames_to_video([tmp_path / "ws"], tmp_path / "dir.mp4")


def test_missing_pyav_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(PasticheError, match=r"needs PyAV: pip install 'pastiche\[video\]'"):
        video.probe("clip.mp4")
    with pytest.raises(PasticheError, match="needs PyAV"):  # before a run whose frames it would join
        video.check_video_output(tmp_path / "film.mp4")
    write_frames(tmp_path / "ws", [(16, 16)] * 2)  # PIL writes GIFs
    assert video.frames_to_video([tmp_path / "ws"], tmp_path / "film.gif", fps=5) == tmp_path / "film.gif"


@needs_av
def test_main_exit_codes(tmp_path, capsys):
    write_frames(tmp_path / "ws", [(16, 16)] * 3)
    assert video.main([str(tmp_path / "ws"), "-o", str(tmp_path / "o.mp4"), "--fps", "24"]) == 0
    assert video.probe(tmp_path / "o.mp4").frames == 3 and "wrote" in capsys.readouterr().out
    assert video.main([str(tmp_path / "nope"), "-o", str(tmp_path / "p.mp4")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pastiche-video: error: ") and "nope" in err and err.count("\n") == 1
    assert video.main([str(tmp_path / "ws"), "-o", str(tmp_path / "p.mp4"), "--fps", "0"]) == 1


def test_sigterm_while_joining_frames_is_ctrl_c(tmp_path, capsys, monkeypatch):
    """kill (a scheduler's time limit) used to end pastiche-video with status 143 and leave its
    hidden temporary file beside the output."""
    write_frames(tmp_path / "ws", [(16, 16)] * 4)
    opened, open_image = [], video.open_image

    def open_then_terminate(*args, **kwargs):
        opened.append(1)
        if len(opened) == 3:  # while the GIF is being written
            os.kill(os.getpid(), signal.SIGTERM)
        return open_image(*args, **kwargs)

    monkeypatch.setattr(video, "open_image", open_then_terminate)
    before = signal.getsignal(signal.SIGTERM)
    assert video.main([str(tmp_path / "ws"), "-o", str(tmp_path / "film.gif")]) == 130
    assert capsys.readouterr().err.splitlines() == ["pastiche-video: interrupted; nothing written"]
    assert os.listdir(tmp_path) == ["ws"] and signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("fps", [0, -1, float("nan"), float("inf"), 0.001, 1e-9, 5000])
def test_frame_rates_outside_the_range_are_refused(fps):
    with pytest.raises(PasticheError, match=r"^fps must be from 0\.1 to 1000 frames a second"):
        video.check_fps(fps)


@needs_av
@pytest.mark.parametrize("fps", [0.1, 1000])
def test_frame_rates_at_the_ends_of_the_range_make_videos(tmp_path, fps):
    write_frames(tmp_path / "ws", [(16, 16)] * 2)
    for name in ("o.mp4", "o.gif"):
        assert video.frames_to_video([tmp_path / "ws"], tmp_path / name, fps=fps).stat().st_size > 0


@needs_av
def test_the_command_s_video_is_this_run_s_frames_ending_on_the_result(tmp_path, monkeypatch, capsys):
    import pastiche.cli

    monkeypatch.chdir(tmp_path)
    Image.fromarray(texture(48, 32, seed=2)).save("content.png")
    Image.fromarray(texture(40, 40, seed=1)).save("style.png")
    write_frames(tmp_path / "ws", [(48, 32)] * 3, name="old{:d}.png")  # an earlier run's
    argv = ["-c", "content.png", "-s", "style.png", "-o", "out.png", "--size", "48", "--single-scale",
            "--num-steps", "5", "--workspace", "ws", "--workspace-step", "2", "--video", "v.gif", "--fps", "10",
            "--no-verbose", "--content-layers", "block2_relu1", "--style-layers", "block1_relu1"]
    joined = []
    monkeypatch.setattr(pastiche.cli, "frames_to_video",
                        lambda files, *a, **k: joined.append(list(files)) or video.frames_to_video(files, *a, **k))
    assert pastiche.cli.main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "ws").iterdir()) == ["0.png", "2.png", "4.png", "old0.png", "old1.png",
                                                                   "old2.png"]
    assert joined == [[Path("ws/0.png"), Path("ws/2.png"), Path("ws/4.png"), Path("out.png")]]  # ends on the result
    with Image.open(tmp_path / "v.gif") as gif:
        assert gif.n_frames == 4
    video_content = ["-c", str(make_clip(tmp_path / "clip.mp4")), "-s", "style.png", "-o", "o.mp4", "--workspace", "w2"]
    assert pastiche.cli.main(video_content) == 1
    assert "--workspace is for an image --content" in capsys.readouterr().err and not (tmp_path / "w2").exists()


def test_a_gif_s_frame_times_do_not_drift(tmp_path):
    """GIF durations are whole hundredths: 30 fps rounded frame by frame made 30 frames last 0.9 s."""
    write_frames(tmp_path / "ws", [(8, 8)] * 30)
    with Image.open(video.frames_to_video([tmp_path / "ws"], tmp_path / "o.gif", fps=30)) as gif:
        durations = [gif.seek(i) or gif.info["duration"] for i in range(gif.n_frames)]
    assert sum(durations) == 1000 and set(durations) == {30, 40}


def test_frames_whose_names_sort_alike_come_in_one_order(tmp_path):
    """'010' and '10', 'A1' and 'a1' are alike to the natural sort: they came in directory order."""
    for name in ("10.png", "a1.png", "010.png", "A1.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    assert [p.name for p in video.frame_files([tmp_path])] == ["010.png", "10.png", "A1.png", "a1.png"]


def test_an_empty_frames_path_is_not_the_current_folder(tmp_path, monkeypatch, capsys):
    """``pastiche-video "$WS"`` with WS unset joined whatever images the current folder held."""
    Image.new("RGB", (4, 4)).save(tmp_path / "holiday.png")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PasticheError, match="^a frames path is empty; give a folder of frames or image files$"):
        video.frame_files([tmp_path, ""])
    assert video.main(["", "-o", "out.gif"]) == 1
    assert capsys.readouterr().err == ("pastiche-video: error: a frames path is empty; give a folder of frames"
                                       " or image files\n")
    assert os.listdir(tmp_path) == ["holiday.png"]


def test_pastiche_video_s_last_line_on_a_full_stdout_is_a_note(tmp_path, monkeypatch, capsys):
    class Full(io.TextIOBase):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")
    write_frames(tmp_path / "ws", [(8, 8)] * 2)
    monkeypatch.setattr(sys, "stdout", Full())
    assert video.main([str(tmp_path / "ws"), "-o", str(tmp_path / "o.gif")]) == 0
    assert capsys.readouterr().err == ("pastiche-video: cannot print progress (No space left on device); going on"
                                       " without it\n")
    assert (tmp_path / "o.gif").is_file()


def test_pastiche_video_joins_frames_without_torch(tmp_path):
    """Loading torch costs ~1 s and ~500 MB of RSS that joining frames has no use for."""
    import subprocess

    write_frames(tmp_path / "ws", [(8, 8)] * 2)
    script = ("import sys; from pastiche.video import main;"
              f" code = main([{str(tmp_path / 'ws')!r}, '-o', {str(tmp_path / 'o.gif')!r}]);"
              " print(code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines()[-1] == "0 False", done.stderr
    with Image.open(tmp_path / "o.gif") as gif:
        assert gif.n_frames == 2
