"""A clip stylised frame by frame (pastiche.video_transfer, and the command's video --content)
on tiny synthetic clips made with PyAV."""

from __future__ import annotations

import errno
import json
import os
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from clips import av, make_clip, needs_av, texture
from pastiche import video, video_transfer
from pastiche.engine import StyleTransfer
from pastiche.errors import PasticheError, PasticheWarning

# Most clips here come out with an odd side (48x32 at size 32: 32x21), which an MP4 crops with a
# note; the tests of that note catch it with pytest.warns
pytestmark = pytest.mark.filterwarnings("ignore::pastiche.errors.PasticheWarning")


def count_steps(monkeypatch, fail_at: int = 0) -> list:
    calls = []
    original = StyleTransfer.step

    def step(self):
        calls.append(1)
        if len(calls) == fail_at:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(StyleTransfer, "step", step)
    return calls


OPTIONS = dict(size=32, device="cpu", num_steps_first=2, num_steps_per_frame=1, progress=False)


def test_a_killed_saves_temporary_file_is_not_a_finished_frame(tmp_path):
    """A hidden temporary PNG (a save cut short by SIGKILL or a power cut) had counted, so the
    next run with other settings was refused, and Ctrl-C said frames were kept."""
    (tmp_path / "settings.json").write_text("{}")
    (tmp_path / ".pastiche-abc123.png").write_bytes(b"x")
    assert not video_transfer.has_finished_frames(tmp_path)
    Image.new("RGB", (4, 4)).save(tmp_path / "000001.png")
    assert video_transfer.has_finished_frames(tmp_path)


@needs_av
def test_a_clip_keeps_its_frame_times_and_its_sound_in_step(tmp_path):
    """The frames were re-timed at the average rate from 0 and the sound copied as it was: a clip
    whose picture starts after its sound, or whose rate varies (phones record so), came out of
    step with it."""
    clip = tmp_path / "clip.mp4"
    hundredths = [50, 60, 70, 120, 130, 140]  # the picture starts 0.5 s in, with a gap after 0.7 s
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 100)
        sound = out.add_stream("aac", rate=8000, layout="mono")
        for i, t in enumerate(hundredths):
            frame = av.VideoFrame.from_ndarray(texture(48, 32, seed=i), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 100)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        t = np.arange(8000 * 16 // 10) / 8000  # 1.6 s: silent until the picture starts, then a tone
        chunk = av.AudioFrame.from_ndarray((0.5 * np.sin(2 * np.pi * 440 * t) * (t >= 0.5))[None].astype(np.float32),
                                           format="fltp", layout="mono")
        chunk.sample_rate = 8000
        out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    assert [t for t, _, _ in video.timed_frames(clip)] == [Fraction(t, 100) for t in hundredths]
    style = tmp_path / "style.png"
    Image.fromarray(texture(40, 40, seed=1)).save(style)
    out = video_transfer.stylize_video(clip, style, tmp_path / "out.mp4", **OPTIONS)
    assert [round(float(t), 3) for t, _, _ in video.timed_frames(out)] == [0, 0.1, 0.2, 0.7, 0.8, 0.9]
    with av.open(str(out)) as container:
        samples = np.concatenate([f.to_ndarray().ravel() for f in container.decode(audio=0)])
    assert np.sqrt(np.mean(samples[400:2400] ** 2)) > 0.2  # the tone from 0.05 s on, not the silence


@needs_av
def test_a_clip_stored_sideways_is_read_and_stylised_upright(tmp_path):
    """A phone's portrait clip is stored sideways with a display rotation, which players (and
    ffmpeg's autorotate) apply; its frames were read, stylised and written sideways."""
    plain = [np.asarray(im) for im in video.read_frames(make_clip(tmp_path / "plain.mp4"))]
    turned = [np.asarray(im) for im in video.read_frames(make_clip(tmp_path / "turned.mp4", sideways=True))]
    assert next(av.open(str(tmp_path / "turned.mp4")).decode(video=0)).rotation == 90  # the matrix is there
    assert [t.shape for t in turned] == [(48, 32, 3)] * 3  # upright: 32 px wide, 48 high
    assert all(np.array_equal(t, np.rot90(p)) for t, p in zip(turned, plain))  # a quarter turn anticlockwise
    style = tmp_path / "style.png"
    Image.fromarray(texture(40, 40, seed=1)).save(style)
    out = video_transfer.stylize_video(tmp_path / "turned.mp4", style, tmp_path / "out.mp4", **OPTIONS)
    info = video.probe(out)
    assert (info.width, info.height) == (20, 32)  # portrait: 21x32 at OPTIONS' size, cropped to even
    assert next(av.open(str(out)).decode(video=0)).rotation == 0


def test_a_video_output_that_is_the_init_image_is_refused(tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "start.gif")
    with pytest.raises(PasticheError, match="refusing to overwrite input '.*start.gif'"):
        video_transfer.stylize_video(tmp_path / "clip.mp4", tmp_path / "style.png", tmp_path / "start.gif",
                            init=tmp_path / "start.gif", **OPTIONS)
    assert os.listdir(tmp_path) == ["start.gif"]


@needs_av
def test_stylize_video_resumes_and_carries_audio(tmp_path, monkeypatch):
    clip = make_clip(tmp_path / "clip.mp4", frames=3, size=(48, 32), audio="aac")
    style = tmp_path / "style.png"
    Image.fromarray(texture(40, 40, seed=1)).save(style)
    out = tmp_path / "out.mp4"
    calls = count_steps(monkeypatch, fail_at=4)  # interrupted during the third frame
    with pytest.raises(KeyboardInterrupt):
        video_transfer.stylize_video(clip, style, out, **OPTIONS)
    frames = tmp_path / "out.mp4.frames"
    assert sorted(p.name for p in frames.glob("*.png")) == ["000001.png", "000002.png"] and not out.exists()
    calls.clear()
    assert video_transfer.stylize_video(clip, [style], out, **OPTIONS) == out
    assert len(calls) == 1  # only the third frame was computed
    info = video.probe(out)
    assert (info.frames, info.width, info.height, info.fps, info.has_audio) == (3, 32, 20, 12, True)
    calls.clear()
    video_transfer.stylize_video(clip, [style], out, **OPTIONS)  # all done: just re-assembled
    assert not calls
    with pytest.raises(PasticheError, match="other settings"):
        video_transfer.stylize_video(clip, [style], out, **{**OPTIONS, "tv_weight": 1.0})


@needs_av
def test_a_resume_goes_on_with_the_seed_that_made_the_frames(tmp_path, monkeypatch):
    """A resume without a seed takes the interrupted run's from the record (a random start's first
    frame was made with it); one with another seed is refused, as other settings are."""
    clip = make_clip(tmp_path / "clip.mp4", frames=3)
    style = tmp_path / "style.png"
    Image.fromarray(texture(40, 40, seed=1)).save(style)
    out, folder = tmp_path / "out.mp4", tmp_path / "out.mp4.frames"
    assert video_transfer.recorded_seed(folder) is None
    count_steps(monkeypatch, fail_at=4)  # interrupted during the third frame
    with pytest.raises(KeyboardInterrupt):
        video_transfer.stylize_video(clip, style, out, **OPTIONS)  # a random seed
    seed = video_transfer.recorded_seed(folder)
    assert isinstance(seed, int) and torch.initial_seed() != seed  # the caller's generator as it was
    with pytest.raises(PasticheError, match=r"made with other settings \(seed\)"):
        video_transfer.stylize_video(clip, style, out, seed=seed + 1, **OPTIONS)
    seeds = []
    video_transfer.stylize_video(clip, style, out, on_frame=lambda *a: seeds.append(torch.initial_seed()), **OPTIONS)
    assert seeds == [seed] * 3 and video_transfer.recorded_seed(folder) == seed
    record = json.loads((folder / "settings.json").read_text())
    del record["seed"]  # as pastiche kept it before: the frames go on with any seed
    (folder / "settings.json").write_text(json.dumps(record))
    video_transfer.stylize_video(clip, style, out, seed=5, **OPTIONS)
    assert video_transfer.recorded_seed(folder) == 5


@needs_av
def test_the_command_s_resumed_video_says_the_seed_that_made_it(tmp_path, monkeypatch, capsys):
    import pastiche.cli

    monkeypatch.chdir(tmp_path)
    clip = make_clip(tmp_path / "clip.mp4", frames=3)
    Image.fromarray(texture(40, 40, seed=1)).save("style.png")
    argv = ["-c", str(clip), "-s", "style.png", "-o", "out.mp4", "--size", "32", "--num-steps", "2",
            "--frame-steps", "1", "--content-layers", "block2_relu1", "--style-layers", "block1_relu1"]
    count_steps(monkeypatch, fail_at=4)  # interrupted during the third frame
    assert pastiche.cli.main(argv) == 130
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("seed: ")
    assert pastiche.cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == first and lines[-1] == f"wrote out.mp4 ({first.replace(': ', ' ')})"


@needs_av
def test_stylize_video_makes_the_first_frame_coarse_to_fine(tmp_path, monkeypatch):
    clip = make_clip(tmp_path / "clip.mp4", frames=2, size=(96, 64))
    style = tmp_path / "style.png"
    Image.fromarray(texture(40, 40, seed=3)).save(style)
    sizes = []
    original = StyleTransfer.step
    monkeypatch.setattr(StyleTransfer, "step", lambda self: (original(self), sizes.append(self.size))[0])
    video_transfer.stylize_video(clip, style, tmp_path / "o.mp4", size=96, device="cpu", num_steps_first=2,
                        coarse_steps=[3], num_steps_per_frame=1, progress=False)
    # 3 steps at half size, 2 at full size, then 1 for the second frame
    assert sizes == [(48, 32)] * 3 + [(96, 64)] * 3


@needs_av
def test_stylize_video_with_flow_and_pcm_audio(tmp_path, monkeypatch):
    clip = make_clip(tmp_path / "clip.mkv", frames=3, audio="pcm_s16le")
    style = tmp_path / "style.png"
    Image.fromarray(texture(40, 40, seed=2)).save(style)
    calls = count_steps(monkeypatch)
    out = video_transfer.stylize_video(clip, style, tmp_path / "o.mp4", flow=True, max_frames=2, **OPTIONS)
    assert len(calls) == 3
    info = video.probe(out)
    assert (info.frames, info.has_audio, info.fps) == (2, True, Fraction(12))
    with av.open(str(out)) as container:
        assert container.streams.audio[0].codec_context.name == "aac"  # PCM re-encoded for MP4
    with pytest.warns(PasticheWarning, match="^'.*o.gif' will have no sound: a GIF holds none") as warned:
        gif = video_transfer.stylize_video(clip, style, tmp_path / "o.gif", max_frames=2, **OPTIONS)
    assert warned[0].filename == __file__  # shown at the caller's line, not pastiche's
    with Image.open(gif) as im:  # PIL merges identical frames, adding up their durations
        assert sum(im.seek(i) or im.info["duration"] for i in range(im.n_frames)) == 170  # 2/12 s in hundredths


@needs_av
@pytest.mark.parametrize("mistake, needle", [
    (dict(style_layers=["bogus"]), "bogus"), (dict(weights="nope.pqw"), "nope.pqw"), ("missing style", "missing.png"),
    (dict(num_steps_first=2.5), "whole number of steps"), (dict(coarse_steps="ab"), "coarse_steps must be a sequence"),
    (dict(num_steps_per_frame=True), "num_steps_per_frame must be a whole number"),
    (dict(flow="no"), "flow must be True or False"), (dict(size=12), "too small")])
def test_a_bad_option_leaves_no_frames_record_behind(tmp_path, mistake, needle):
    """Before, the record of settings was written first, and it refused the corrected run."""
    clip = make_clip(tmp_path / "clip.mp4", frames=2)
    style = tmp_path / "style.png"
    Image.fromarray(texture(40, 40, seed=1)).save(style)
    out = tmp_path / "out.mp4"
    bad = dict(mistake) if isinstance(mistake, dict) else {}
    styles = tmp_path / "missing.png" if mistake == "missing style" else style
    with pytest.raises(PasticheError, match=needle):
        video_transfer.stylize_video(clip, styles, out, **{**OPTIONS, **bad})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "style.png"]
    assert video_transfer.stylize_video(clip, style, out, **OPTIONS) == out


@needs_av
def test_a_resumed_video_keeps_its_step_counts(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=2)
    style = tmp_path / "style.png"
    Image.fromarray(texture(40, 40, seed=1)).save(style)
    out = video_transfer.stylize_video(clip, style, tmp_path / "out.mp4", **OPTIONS)
    for changed in (dict(num_steps_per_frame=2), dict(num_steps_first=3), dict(coarse_steps=[4])):
        with pytest.raises(PasticheError,
                           match=r"other settings \(num_steps_first, coarse_steps or num_steps_per_frame\)"):
            video_transfer.stylize_video(clip, style, out, **{**OPTIONS, **changed})
    with pytest.raises(PasticheError, match=r"other settings \(tv_weight\)"):
        video_transfer.stylize_video(clip, style, out, **{**OPTIONS, "tv_weight": 1.0})
    with pytest.raises(PasticheError, match=r"other settings \(lbfgs_history\)"):  # no flag: the keyword
        video_transfer.stylize_video(clip, style, out, **{**OPTIONS, "lbfgs_history": 3})
    # Another clip at the same path: its frames are not these (they were reused, unseen)
    make_clip(clip, frames=3)
    with pytest.raises(PasticheError, match=r"other settings \(the content clip\)"):
        video_transfer.stylize_video(clip, style, out, **OPTIONS)
    os.utime(style)  # a style image touched since: named too
    with pytest.raises(PasticheError, match=r"other settings \(the content clip, the style images\)"):
        video_transfer.stylize_video(clip, style, out, **OPTIONS)


def test_max_frames_must_be_a_whole_number(tmp_path):
    for bad in (0, -1, 1.5):
        with pytest.raises(PasticheError, match="max_frames must be a whole number"):
            video_transfer.stylize_video(tmp_path / "clip.mp4", tmp_path / "s.png", tmp_path / "o.mp4", max_frames=bad)


@needs_av
def test_a_record_without_finished_frames_does_not_hold_the_next_run(tmp_path):
    """A run stopped in its first frame (Ctrl-C, a NaN) left the record alone; it must not refuse
    the corrected run, as there is nothing to mix."""
    clip = make_clip(tmp_path / "clip.mp4", frames=2)
    style = tmp_path / "style.png"
    Image.fromarray(texture(40, 40, seed=1)).save(style)
    out = tmp_path / "out.mp4"
    folder = video_transfer.default_frames_dir(out)
    folder.mkdir()
    (folder / "settings.json").write_text('{"steps": "other"}')
    assert video_transfer.stylize_video(clip, style, out, **OPTIONS) == out


@needs_av
def test_the_command_s_video_content_refuses_fps_and_says_when_nothing_was_kept(tmp_path, monkeypatch, capsys):
    import pastiche.cli

    monkeypatch.chdir(tmp_path)
    clip = make_clip(tmp_path / "clip.mp4", frames=2)
    Image.fromarray(texture(40, 40, seed=1)).save("style.png")
    argv = ["-c", str(clip), "-s", "style.png", "-o", "out.mp4", "--size", "48", "--no-verbose"]
    assert pastiche.cli.main(argv + ["--fps", "5"]) == 1
    assert "--fps is for --video; a video --content keeps its own frame rate" in capsys.readouterr().err
    assert pastiche.cli.main(argv + ["--frame-steps", "0"]) == 1
    assert capsys.readouterr().err == "pastiche: error: --frame-steps must be at least 1, got 0\n"
    quick = ["--num-steps", "2", "--frame-steps", "1", "--seed", "7", "--content-layers", "block2_relu1",
             "--style-layers", "block1_relu1"]
    verbose = [a if a != "out.mp4" else "run.mp4" for a in argv if a != "--no-verbose"]
    assert pastiche.cli.main(verbose + quick) == 0
    captured = capsys.readouterr()  # not a terminal: no bar but a row per frame, and the seed to repeat the run
    lines = captured.out.splitlines()
    assert lines[:4] == ["seed: 7", "", "frame   elapsed loss", "------- ------- ----"] and captured.err == ""
    assert [line.split()[0] for line in lines[4:6]] == ["1", "2"] and lines[6:] == ["wrote run.mp4 (seed 7)"]
    (tmp_path / "run.mp4").unlink()  # resumed: the finished frames are said to be kept
    assert pastiche.cli.main(verbose + quick) == 0
    assert [line.split()[::2] for line in capsys.readouterr().out.splitlines()[4:6]] == [["1", "kept"], ["2", "kept"]]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(pastiche.cli, "stylize_video", interrupted)
    assert pastiche.cli.main(argv) == 130
    assert capsys.readouterr().err == "pastiche: interrupted before the first frame was finished; nothing kept\n"


@needs_av
@pytest.mark.parametrize("option", [["--info-step", "5"], ["--workspace-step", "2"], ["--workspace-prefix", "f"]])
def test_the_command_s_video_content_refuses_image_only_options(tmp_path, monkeypatch, capsys, option):
    """pastiche 1.6.0's options for an image run did nothing for a video --content, unsaid."""
    import pastiche.cli

    monkeypatch.chdir(tmp_path)
    Image.fromarray(texture(40, 40, seed=1)).save("style.png")
    argv = ["-c", str(make_clip(tmp_path / "clip.mp4", frames=2)), "-s", "style.png", "-o", "out.mp4", *option]
    assert pastiche.cli.main(argv) == 1
    assert capsys.readouterr().err == (f"pastiche: error: {option[0]} is for an image --content; a video --content"
                                       " prints a row per frame and keeps every frame\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "style.png"]


@needs_av
def test_an_animated_gif_content_with_a_video_output_is_stylised_as_a_video(tmp_path, monkeypatch, capsys):
    """Before, it was taken as an image (its first frame), whose output cannot be a .gif or .mp4."""
    import pastiche.cli

    monkeypatch.chdir(tmp_path)
    frames = [Image.fromarray(texture(45, 33, seed=i)) for i in range(3)]  # odd sides: H.264 needs even ones
    frames[0].save("anim.gif", save_all=True, append_images=frames[1:], duration=[100, 300, 700], loop=0)
    Image.fromarray(texture(40, 40, seed=1)).save("style.png")
    quick = ["-c", "anim.gif", "-s", "style.png", "--size", "45", "--num-steps", "2", "--schedule", "none",
             "--content-layers", "block2_relu1", "--style-layers", "block1_relu1"]
    assert pastiche.cli.main(quick + ["-o", "out.gif", "--frame-steps", "1", "--no-verbose"]) == 0
    with Image.open("out.gif") as gif:  # every frame, at its own time and size
        assert gif.size == (45, 33) and gif.n_frames == 3
        assert [gif.seek(i) or gif.info["duration"] for i in range(3)] == [100, 300, 700]  # the last: its own
    capsys.readouterr()
    assert pastiche.cli.main(quick + ["-o", "out.mp4", "--frame-steps", "1"]) == 0
    assert capsys.readouterr().err == ("pastiche: note: 'out.mp4' is 44x32 px, the frames' 45x33 cropped to even"
                                       " sides, which H.264 needs (a .gif keeps every pixel)\n")
    assert video.probe("out.mp4").frames == 3
    assert pastiche.cli.main(quick + ["-o", "first.png", "--no-verbose"]) == 0  # an image output: its first frame
    assert Image.open("first.png").size == (45, 33)


@needs_av
def test_a_too_small_video_frame_is_named_as_the_clip_s(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=2)
    style = tmp_path / "style.png"
    Image.fromarray(texture(40, 40, seed=1)).save(style)
    with pytest.raises(PasticheError, match=f"^frame 1 of '{clip}' is too small: 12x8 px"):
        video_transfer.stylize_video(clip, style, tmp_path / "out.mp4", **{**OPTIONS, "size": 12})


@needs_av
def test_a_resume_with_size_is_not_refused_over_size_pixels(tmp_path):
    """--size overrides --size-pixels (and --style-size --style-size-pixels): the record held the
    overridden one, and refused a resume over a setting that made no difference."""
    clip = make_clip(tmp_path / "clip.mp4", frames=2)
    style = tmp_path / "style.png"
    Image.fromarray(texture(40, 40, seed=1)).save(style)
    out = video_transfer.stylize_video(clip, style, tmp_path / "out.mp4", **OPTIONS, style_size=32)
    video_transfer.stylize_video(clip, style, out, **OPTIONS, style_size=32, size_pixels=999, style_size_pixels=5)
    with pytest.raises(PasticheError, match=r"other settings \(size, size_pixels\)"):
        video_transfer.stylize_video(clip, style, out, **{**OPTIONS, "size": None}, size_pixels=32 * 21, style_size=32)
    record = video_transfer.default_frames_dir(out) / "settings.json"  # as an older pastiche wrote it
    older = json.loads(record.read_text())
    older["options"]["size_pixels"] = 250000
    record.write_text(json.dumps(older))
    video_transfer.stylize_video(clip, style, out, **OPTIONS, style_size=32)
    with pytest.raises(PasticheError, match="^on_frame must be a function of"):
        video_transfer.stylize_video(clip, style, out, **OPTIONS, on_frame="print")


@needs_av
@pytest.mark.parametrize("rate, decoders", [(44100, {"mp3", "mp3float"}), (8000, {"aac"})])
def test_mp3_sound_is_copied_where_the_output_takes_it(tmp_path, rate, decoders):
    """MP3 (decoded as 'mp3float') was re-encoded to AAC; an MP4 takes it as it is, except at 8 kHz,
    which its muxer refuses: copying that would fail the whole video at its end."""
    clip = make_clip(tmp_path / "clip.mkv", frames=2, audio="libmp3lame", rate=rate)
    style = tmp_path / "style.png"
    Image.fromarray(texture(40, 40, seed=1)).save(style)
    out = video_transfer.stylize_video(clip, style, tmp_path / "out.mp4", **OPTIONS)
    with av.open(str(out)) as container:
        assert container.streams.audio[0].codec_context.name in decoders


@needs_av
def test_a_video_whose_frames_cannot_be_saved_says_they_are_kept(tmp_path, monkeypatch):
    """'choose another --output' would have started over: the finished frames follow the output."""
    import pastiche.imageio as imageio

    clip = make_clip(tmp_path / "clip.mp4", frames=2)
    style = tmp_path / "style.png"
    Image.fromarray(texture(40, 40, seed=1)).save(style)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(imageio, "atomic_file", full)
    out = tmp_path / "out.mp4"
    with pytest.raises(PasticheError) as info:
        video_transfer.stylize_video(clip, style, out, **OPTIONS)
    assert str(info.value) == (f"cannot write output '{video_transfer.default_frames_dir(out) / '000001.png'}': the disk is"
                               f" full; free some space; then run again: the finished frames in"
                               f" '{video_transfer.default_frames_dir(out)}' are kept")


@needs_av
def test_an_mp4_from_a_clip_of_varying_rate_lasts_as_long_as_the_clip(tmp_path):
    """The encoder gave every frame 1/fps, so the last one lasted the average, not its own."""
    frames = [Image.fromarray(texture(32, 32, seed=i)) for i in range(4)]
    frames[0].save(tmp_path / "var.gif", save_all=True, append_images=frames[1:], duration=[100, 200, 50, 70], loop=0)
    style = tmp_path / "style.png"
    Image.fromarray(texture(40, 40, seed=1)).save(style)
    out = video_transfer.stylize_video(tmp_path / "var.gif", style, tmp_path / "var.mp4", **OPTIONS)
    with av.open(str(out)) as container:
        assert container.duration == 420000  # microseconds: 0.1 + 0.2 + 0.05 + 0.07 s (0.45 s before)


def test_a_misspelt_option_is_named_as_stylize_video_s(tmp_path):
    with pytest.raises(TypeError, match=r"^stylize_video\(\) got an unexpected keyword argument 'tv_weigth'; did"
                                        r" you mean 'tv_weight'\?$"):
        video_transfer.stylize_video(tmp_path / "clip.mp4", tmp_path / "s.png", tmp_path / "o.mp4", tv_weigth=1)
