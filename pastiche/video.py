"""Video files in and out: a clip's frames (upright, with their times), and frames → MP4/GIF,
with the clip's sound. :mod:`pastiche.video_transfer` stylises a clip with them.

Uses PyAV (``pip install av``, or the ``video`` extra), whose wheels bundle ffmpeg; no system ffmpeg needed.
Frames are PIL RGB images.

    pastiche-video WORKSPACE... -o out.mp4 --fps 30
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

from PIL import Image

from .__main__ import termination_as_interrupt
from .console import OneLineParser, notes, printer
from .errors import PasticheError, command_line, option_name, warn
from .files import atomic_file, check_readable, check_writable, output_path
from .imageio import SUPPORTED_EXTENSIONS, open_image

PathLike = Union[str, os.PathLike]
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")  # inputs
OUTPUT_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".gif")  # H.264 (+ audio), or GIF
_MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}  # copied as is; others → AAC


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise PasticheError("video support needs PyAV: pip install 'pastiche[video]' (or pip install av)") from None
    return av


def is_video(path: object) -> bool:
    """Whether ``path`` names a video by its extension (.mp4 .mov .mkv .avi .webm .m4v)."""
    return isinstance(path, (str, os.PathLike)) and Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoInfo:
    fps: Fraction  # average frame rate
    frames: int  # number of video frames (> 0)
    width: int
    height: int
    has_audio: bool
    codec: str


@contextlib.contextmanager
def _opened(path: PathLike) -> Iterator[Tuple[Any, Any]]:
    """(container, first video stream) of a readable video, or a one-line PasticheError."""
    av, name = _av(), os.fspath(path)
    where = f"cannot read video '{name}'"
    check_readable(name, f"video '{name}'", expected="a video file")
    try:
        container = av.open(name)
    except av.error.EOFError:
        raise PasticheError(f"{where}: it has no frames (empty or truncated); re-export it") from None
    except (av.error.FFmpegError, OSError) as e:
        raise PasticheError(f"{where}: not a video or damaged ({getattr(e, 'strerror', None) or e});"
                            " use an MP4, MOV, MKV, AVI or WebM file") from None
    try:
        if not container.streams.video:
            raise PasticheError(f"{where}: it has no video stream; pass a video file")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise PasticheError(f"{where}: unsupported video codec (no decoder for it in PyAV's ffmpeg);"
                                " re-encode it to H.264, e.g. in an MP4")
        yield container, stream
    finally:
        container.close()


def probe(path: PathLike) -> VideoInfo:
    """Frame rate, frame count, size and whether there is audio; PasticheError for a bad video."""
    with _opened(path) as (container, stream):
        try:
            frames = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        except _av().error.FFmpegError as e:
            raise PasticheError(f"cannot read video '{os.fspath(path)}': it is damaged ({e.strerror});"
                                " re-encode it") from None
        if not frames:
            raise PasticheError(f"cannot read video '{os.fspath(path)}': it has no frames; re-export it")
        fps = Fraction(stream.average_rate or stream.guessed_rate or 30)
        return VideoInfo(fps, frames, stream.width, stream.height, bool(container.streams.audio),
                         stream.codec_context.name)


# A frame's display rotation (PyAV's VideoFrame.rotation: av_display_rotation_get, degrees
# counter-clockwise) as the turn that shows it upright, as ffmpeg's own autorotate turns it: a
# phone's portrait clip is stored sideways with such a rotation.
_UPRIGHT = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


def read_frames(path: PathLike) -> Iterator[Image.Image]:
    """Decode the first video stream as upright RGB PIL frames; PasticheError if none can be decoded."""
    return (image for _, _, image in timed_frames(path))


def timed_frames(path: PathLike) -> Iterator[Tuple[Optional[Fraction], Optional[Fraction], Image.Image]]:
    """:func:`read_frames`' frames, each as (start, end, frame): its presentation time and when the
    next one is due, in seconds (None where the stream does not say). A clip's frames need not
    start at 0 beside its sound, nor come at a steady rate (phones record a variable one; a GIF
    holds each frame as long as it likes)."""
    av, count = _av(), 0
    with _opened(path) as (container, stream):
        try:
            for frame in container.decode(stream):
                count += 1
                turn = _UPRIGHT.get(round(getattr(frame, "rotation", 0) or 0) % 360)
                base, duration = frame.time_base, getattr(frame, "duration", None)  # no .duration before PyAV 14
                time = None if frame.pts is None or base is None else Fraction(frame.pts) * base
                end = None if time is None or not duration else time + Fraction(duration) * base
                yield time, end, frame.to_image() if turn is None else frame.to_image().transpose(turn)
        except av.error.FFmpegError as e:
            raise PasticheError(f"cannot read video '{os.fspath(path)}': decoding failed after {count}"
                                f" frames ({e.strerror}); re-encode it") from None
    if not count:
        raise PasticheError(f"cannot read video '{os.fspath(path)}': it has no frames; re-export it")


def check_video_output(path: PathLike, *, inputs: Sequence[object] = (), option: str = "output") -> Path:
    """Validate a video output path before a long run (extension, directory, not an input); the
    errors name the option ``option`` (a keyword, see :func:`~pastiche.errors.option_name`) as
    what to change."""
    p = output_path(path, option)
    if p.suffix.lower() not in OUTPUT_EXTENSIONS:
        raise PasticheError(f"cannot write video '{p}': unsupported extension '{p.suffix}'; use one of "
                            f"{', '.join(OUTPUT_EXTENSIONS)}")
    if p.suffix.lower() != ".gif":  # PIL writes GIFs; the rest need PyAV: say so now, not after the run
        _av()
    return check_writable(path, inputs=inputs, kind="video", input_kind="input", option=option)


@contextlib.contextmanager
def _atomic(path: Path, option: Optional[str]) -> Iterator[str]:
    """A temporary file beside ``path`` (same extension) that replaces it only on success; an
    error names the option ``option`` as what to change (None: the caller says what to do)."""
    failures = (OSError,) if path.suffix.lower() == ".gif" else (OSError, _av().error.FFmpegError)  # PIL writes GIFs
    try:
        with atomic_file(path, suffix=path.suffix) as tmp:
            yield tmp
    except failures as e:
        raise PasticheError(f"cannot write video '{path}': {getattr(e, 'strerror', None) or e}"
                            + (f"; choose another {option_name(option)}" if option else "")) from None


def encode_video(files: Sequence[Path], output: Path, fps: Fraction, audio_from: Optional[PathLike] = None,
                 times: Optional[Sequence[Fraction]] = None, option: Optional[str] = "output") -> None:
    """Encode the image ``files`` (read one at a time, resized to the last one's size if need be)
    into ``output`` atomically: a GIF, or H.264 yuv420p in an MP4, MOV or MKV (size cropped to
    even, with a :class:`PasticheWarning`) with the sound of ``audio_from`` (copied, or AAC).
    ``times``: each frame's start in ``audio_from`` (timed_frames) and then the last one's end,
    kept for the frames and, moved by the first one, for the sound, so both stay in step; else a
    steady ``fps`` from 0. ``option``: see _atomic."""
    if not files:
        raise PasticheError(f"cannot write video '{output}': no frames to write")
    size = open_image(files[-1], name="frame").size
    resized: List[Path] = []  # frames of another size, for a note

    def fitted(file: Path) -> Image.Image:
        im = open_image(file, name="frame")
        if im.size == size:
            return im
        resized.append(file)
        return im.resize(size, Image.LANCZOS)
    frames = (fitted(f) for f in files)
    times = times or [Fraction(i) / fps for i in range(len(files) + 1)]
    with _atomic(output, option) as tmp:
        if output.suffix.lower() == ".gif":
            _encode_gif(frames, times, tmp)
        else:
            _encode_h264(frames, size, times, fps, audio_from, output, tmp)
    if resized:
        warn(f"{len(resized)} of {len(files)} frames (the first '{os.fspath(resized[0])}') were resized to"
             f" {size[0]}x{size[1]} px, the last frame's size, in '{output}'")


def _encode_gif(frames: Iterator[Image.Image], times: Sequence[Fraction], tmp: str) -> None:
    # GIF's clock ticks in hundredths: each frame from the rounded times, so that rounding does
    # not add up (30 fps: 3, 3 and 4 hundredths); 2 at least, as players show 0 or 1 as 10
    ticks = [round(100 * (t - times[0])) for t in times]
    # Pillow keeps every frame until the end, but as it converts them (an adaptive palette per
    # frame, a byte a pixel): handed over one at a time, not as a list of RGB images (3 bytes a
    # pixel, all at once)
    next(frames).save(tmp, format="GIF", save_all=True, append_images=frames, loop=0,
                      duration=[10 * max(2, b - a) for a, b in zip(ticks, ticks[1:])])


def _encode_h264(frames: Iterator[Image.Image], size: Tuple[int, int], times: Sequence[Fraction], fps: Fraction,
                 audio_from: Optional[PathLike], output: Path, tmp: str) -> None:
    """``frames`` (all ``size``) into ``tmp`` as ``output``'s container, H.264, with their ``times``
    where they vary, and the sound of ``audio_from`` (its first audio stream) beside them."""
    av = _av()
    w, h = max(2, size[0] - size[0] % 2), max(2, size[1] - size[1] % 2)
    if (w, h) != size:
        warn(f"'{output}' is {w}x{h} px, the frames' {size[0]}x{size[1]} cropped to even sides, which H.264"
             " needs (a .gif keeps every pixel)")
    options = {"movflags": "faststart"} if output.suffix.lower() != ".mkv" else {}
    with av.open(tmp, "w", options=options) as out, \
            (av.open(os.fspath(audio_from)) if audio_from else contextlib.nullcontext()) as source:
        stream = out.add_stream("libx264", rate=fps.limit_denominator(100000), options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        a_in = source.streams.audio[0] if source and source.streams.audio else None
        copy = a_in is not None and _can_copy(a_in, output.suffix)
        # every stream before the first packet, which writes the header
        a_out = None if a_in is None else out.add_stream_from_template(a_in) if copy else \
            out.add_stream("aac", rate=a_in.codec_context.sample_rate or 44100)
        # a steady rate stays one (a container's millisecond clock rounds 1/12 s to 83 and 84 ms)
        varying = any(abs(b - a - 1 / fps) > Fraction(1, 1000) for a, b in zip(times, times[1:-1]))
        # each frame's start, then the last one's end, in _TIME_BASE; a packet's length is the
        # gap to the next start (the encoder gives every packet 1/fps)
        stamps = [round((t - times[0]) / _TIME_BASE) for t in times] if varying else []
        lengths = {a: b - a for a, b in zip(stamps, stamps[1:])}
        if varying:
            stream.codec_context.time_base = _TIME_BASE

        def timed(packets: List[Any]) -> List[Any]:
            for packet in packets:
                packet.duration = lengths.get(packet.pts, packet.duration)
            return packets
        count = 0
        for im in frames:
            frame = av.VideoFrame.from_image(im.crop((0, 0, w, h)) if (w, h) != size else im)
            if varying:
                frame.pts, frame.time_base = stamps[count], _TIME_BASE
            else:
                frame.pts = count
            count += 1
            out.mux(timed(stream.encode(frame)))
        out.mux(timed(stream.encode(None)))
        if a_in is not None:  # the sound from the first frame's time to the video's end
            end = (times[count] - times[0]) if varying else count / fps
            _mux_sound(out, source.demux(a_in), a_out, copy, times[0], end)


def _mux_sound(out: Any, packets: Iterator[Any], a_out: Any, copy: bool, start: Fraction, end: Fraction) -> None:
    """The audio ``packets`` from their time ``start`` for ``end`` seconds into ``out``'s stream
    ``a_out``: copied (``copy``), else decoded and encoded again."""
    for packet in packets:
        if packet.pts is None:
            continue
        at = Fraction(packet.pts) * packet.time_base - start
        if at < 0 or at >= end:
            continue
        if copy:
            shift = round(start / packet.time_base)
            packet.pts, packet.dts = packet.pts - shift, None if packet.dts is None else packet.dts - shift
            packet.stream = a_out
            out.mux(packet)
        else:
            for decoded in packet.decode():
                decoded.pts = None
                out.mux(a_out.encode(decoded))
    if not copy:
        out.mux(a_out.encode(None))


def _can_copy(stream: Any, suffix: str) -> bool:
    """Whether the audio ``stream``'s packets can go as they are into a ``suffix`` file: MKV takes
    any codec, the MP4 family those of _MP4_AUDIO, by the codec's name rather than its decoder's
    ('mp3float' decodes mp3), and only with parameters its muxer accepts (not an 8 kHz MP3), which a
    header written to a scratch file shows before the real one is begun."""
    av, codec = _av(), stream.codec_context.codec
    if suffix.lower() != ".mkv" and getattr(codec, "canonical_name", codec.name) not in _MP4_AUDIO:
        return False
    try:
        with tempfile.TemporaryDirectory() as scratch, av.open(os.path.join(scratch, f"probe{suffix}"), "w") as out:
            out.add_stream_from_template(stream)
            out.start_encoding()
    except (av.error.FFmpegError, ValueError, OSError):  # OSError: no scratch space; AAC is always safe
        return False
    return True


def _natural(path: Path) -> List[Union[int, str]]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def frame_files(sources: Sequence[PathLike]) -> List[Path]:
    """Image files in order: each directory's images (natural sort, hidden files skipped), or files."""
    files: List[Path] = []
    if any(os.fspath(source) == "" for source in sources):  # Path("") is the current folder
        raise PasticheError("a frames path is empty; give a folder of frames or image files")
    for source in map(Path, sources):
        if source.is_dir():
            found = sorted((f for f in source.iterdir() if f.suffix.lower() in SUPPORTED_EXTENSIONS
                            and not f.name.startswith(".") and f.is_file()),
                           key=lambda f: (_natural(f), f.name))  # '010' and '10', 'A1' and 'a1': one order
            if not found:
                raise PasticheError(f"no frames in '{source}': it holds no images; pass a folder of frames"
                                    " (as pastiche --workspace writes) or image files")
            files += found
        elif source.is_file():
            files.append(source)
        else:
            raise PasticheError(f"cannot read frames '{source}': no such file or directory; check the path")
    return files


_TIME_BASE = Fraction(1, 90000)  # the output's clock where frames keep their source times (MPEG's)
FPS_RANGE = (0.1, 1000.0)  # a frame every 10 s (GIF's longest is 655 s) to 1000 a second


def check_fps(fps: float) -> None:
    """Raise PasticheError unless ``fps`` is a frame rate in ``FPS_RANGE``."""
    if not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
        raise PasticheError(f"{option_name('fps')} must be from {FPS_RANGE[0]:g} to {FPS_RANGE[1]:g} frames a second,"
                            f" got {fps}")


def frames_to_video(sources: Sequence[PathLike], output: PathLike, *, fps: float = 30,
                    option: str = "output") -> Path:
    """Join image files or frame directories (workspaces, in order) into an MP4 (H.264) or a GIF.

    Frames of other sizes (coarse-to-fine levels) are resized to the last frame's size. The
    output is written atomically; errors name ``option`` as what to change. Returns the output
    path."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    check_fps(fps)
    files = frame_files(sources)
    output = check_video_output(output, inputs=files, option=option)
    encode_video(files, output, Fraction(fps).limit_denominator(100000), option=option)
    return output


def main(argv: Optional[List[str]] = None) -> int:
    """``pastiche-video WORKSPACE... -o out.mp4 --fps 30``: frames → MP4 or GIF."""
    parser = OneLineParser(
        prog="pastiche-video", description="Join frames (pastiche --workspace directories, in order,"
        " or image files) into an MP4, M4V, MOV or MKV (H.264) or a GIF.")
    parser.add_argument("frames", nargs="+", metavar="WORKSPACE", help="frame directory or image file")
    parser.add_argument("--output", "-o", required=True, help=f"output video ({', '.join(OUTPUT_EXTENSIONS)})")
    parser.add_argument("--fps", type=float, default=30, help="frames per second, 0.1 to 1000 (default 30;"
                        " a GIF holds 50 a second at most, in whole hundredths)")
    args = parser.parse_args(argv)
    try:
        with termination_as_interrupt(), notes("pastiche-video"), command_line():
            path = frames_to_video(args.frames, args.output, fps=args.fps)
    except PasticheError as e:
        print(f"pastiche-video: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pastiche-video: interrupted; nothing written", file=sys.stderr)
        return 130
    printer(print, "pastiche-video")(f"wrote {path}")  # a full stdout after the work: a note, not a traceback
    return 0


if __name__ == "__main__":
    sys.exit(main())
