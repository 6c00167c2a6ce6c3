"""Style transfer on a video: every frame of a clip stylised in turn, each starting from the
previous result moved by optical flow (temporal coherence), with finished frames kept so that an
interrupted run resumes; the output gets the clip's frame times and sound (:mod:`pastiche.video`).

Frames are PIL RGB images; tensors are (1, 3, H, W) float32 in [0, 1] unless said otherwise.
"""

from __future__ import annotations

import itertools
import json
import operator
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from . import color
from .checks import check_flag, whole
from .devices import pick_seed, seeded
from .engine import INIT_KEYWORDS, StyleTransfer, check_keywords
from .errors import PasticheError, on_command_line, option_name, warn
from .flow import warp_previous
from .imageio import ImageLike, describe_source, open_image, save_image
from .schedule import DEFAULT_NUM_STEPS, default_coarse_steps, plan, run
from .video import PathLike, VideoInfo, check_video_output, encode_video, probe, read_frames, timed_frames

FRAME_STEPS = 100  # steps for each frame of a video after the first, by default


def default_frames_dir(output: PathLike) -> Path:
    """Where :func:`stylize_video` keeps finished frames for ``output``: ``OUTPUT.frames/``."""
    return Path(f"{os.fspath(output)}.frames")


def has_finished_frames(folder: Path) -> bool:
    """Whether a frames folder holds any finished frame (its record alone is not one, nor a hidden
    temporary file that a killed save left)."""
    return any(not p.name.startswith(".") for p in folder.glob("*.png"))


def recorded_seed(folder: PathLike) -> Optional[int]:
    """The seed that made the finished frames in ``folder`` (see :func:`stylize_video`), or None
    where it holds none, or a record without a seed (an older pastiche's)."""
    try:
        seed = json.loads((Path(folder) / "settings.json").read_text()).get("seed")
    except (OSError, ValueError, AttributeError):  # AttributeError: a record that is no JSON object
        return None
    whole_number = isinstance(seed, int) and not isinstance(seed, bool)
    return seed if whole_number and has_finished_frames(Path(folder)) else None


def _describe(value: object) -> object:
    """``value`` as the settings record holds it: a file as its path, size and modification time
    (a clip or image replaced at the same path is another input, whose frames are not these)."""
    if isinstance(value, (str, os.PathLike)):
        if not os.path.exists(value):
            return os.fspath(value)
        stat = os.stat(value)
        return [str(Path(value).resolve()), stat.st_size, stat.st_mtime_ns]
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    return value if isinstance(value, (int, float, bool, type(None))) else type(value).__name__


def _in_use(options: dict) -> dict:
    """The record's ``options`` less those that others override, which made no difference to the
    frames: --size-pixels beside --size, --style-size-pixels beside --style-size."""
    overridden_by = {"size_pixels": "size", "style_size_pixels": "style_size"}
    return {k: v for k, v in options.items() if k not in overridden_by or options.get(overridden_by[k]) is None}


def _setting_name(key: str) -> str:
    """A key of the frames directory's record named for a message, in Python or on the command
    line (see :func:`~pastiche.errors.option_name`)."""
    words = {"content": "the content clip", "styles": "the style images", "lbfgs_history": "lbfgs_history"}
    if on_command_line():
        words.update(flow="--no-flow", steps="--num-steps, --schedule, --single-scale or --frame-steps",
                     init="--init or --random-init")
    else:
        words.update(steps="num_steps_first, coarse_steps or num_steps_per_frame")
    return words.get(key) or option_name(key)


def _changed(recorded: object, settings: dict) -> str:
    """The settings that differ from the ``recorded`` ones, named as the user gave them (a file
    counts as changed when its path, size or modification time did)."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("options"), dict):
        return "an unreadable record"
    options, now = recorded["options"], settings["options"]
    keys = [k for k in settings if k != "options" and recorded.get(k) != settings[k]]
    keys += [k for k in sorted(set(options) | set(now)) if options.get(k) != now.get(k)]
    return ", ".join(map(_setting_name, keys))


def _tensor(image: ImageLike, size: Tuple[int, int]) -> torch.Tensor:
    im = open_image(image, name="frame")
    im = im if im.size == size else im.resize(size, Image.BILINEAR)
    return torch.from_numpy(np.array(im, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def stylize_video(content_video: PathLike, styles: Union[ImageLike, Sequence[ImageLike]], output: PathLike,
                  *, num_steps_first: int = DEFAULT_NUM_STEPS, coarse_steps: Optional[Sequence[int]] = None,
                  num_steps_per_frame: int = FRAME_STEPS, frames_dir: Optional[PathLike] = None, flow: bool = True,
                  progress: bool = True, max_frames: Optional[int] = None, seed: Optional[int] = None,
                  on_frame: Optional[Callable[[int, int, Optional[float]], None]] = None, **style_options: Any) -> Path:
    """Stylise every frame of ``content_video`` and write ``output`` (.mp4/.mov/.mkv/.gif).

    The first frame is made coarse to fine, as :func:`~pastiche.schedule.transfer` makes a picture:
    one coarser level per entry of ``coarse_steps`` (default
    :func:`~pastiche.schedule.default_coarse_steps`), then ``num_steps_first`` steps at full size
    (see :func:`~pastiche.schedule.plan`). Each later frame starts from the previous
    stylised frame, moved onto it by block-matching optical flow (``flow=False``: unmoved, so the
    picture lags the motion), and gets ``num_steps_per_frame``. Finished frames are kept as
    ``frames_dir/000001.png`` … (default :func:`default_frames_dir`), so an interrupted run
    (KeyboardInterrupt propagates) resumes where it stopped. Audio is carried over (not into a
    GIF, which warns). ``on_frame(n, total, loss)`` is called as frame ``n`` (from 1) is done,
    with ``loss`` None for one an earlier run finished: for a log where no bar shows. ``seed``:
    torch's random seed for the run, as :func:`~pastiche.schedule.transfer`'s (None: the one the
    frames folder records, where an earlier run left frames, else a random one); the folder
    records it with the other settings, so a resume with another seed is refused like them.
    ``style_options`` go to :class:`~pastiche.engine.StyleTransfer`. Returns the output path.
    """
    from tqdm.auto import tqdm

    check_keywords(style_options, "stylize_video")
    if coarse_steps is None:
        coarse_steps = default_coarse_steps(style_options.get("init", "content"))
    _check_video_options(num_steps_per_frame, flow, progress, max_frames, on_frame)
    style_list = list(styles) if isinstance(styles, (list, tuple)) else [styles]
    init = style_options.get("init")
    starts = [] if init is None or isinstance(init, str) and init in INIT_KEYWORDS else [init]
    output = check_video_output(output, inputs=[content_video, *style_list, *starts])
    info = probe(content_video)
    total = min(info.frames, max_frames) if max_frames else info.frames
    # Every option and style image checked before the frames directory and its record exist, so
    # a mistake does not leave a record that refuses the corrected run.
    _check_first_frame(content_video, style_list, num_steps_first, coarse_steps, style_options)
    if info.has_audio and output.suffix.lower() == ".gif":
        warn(f"'{output}' will have no sound: a GIF holds none (write an .mp4 to keep the clip's)")
    folder = Path(frames_dir) if frames_dir else default_frames_dir(output)
    seed = pick_seed(recorded_seed(folder) if seed is None else seed)  # a resume goes on with its seed
    _use_frames_dir(folder, {"content": _describe(content_video), "styles": _describe(style_list), "flow": flow,
                             "steps": [list(coarse_steps), num_steps_first, num_steps_per_frame],
                             "options": _in_use({k: _describe(v) for k, v in sorted(style_options.items())}),
                             "seed": seed})
    job, prev, prev_content, size, count = None, None, None, (0, 0), 0  # prev: (1, 3, H, W) in [0, 1]
    times: List[Optional[Fraction]] = []  # each frame's start in the clip, for encode_video
    end: Optional[Fraction] = None  # the last one's end
    with seeded(seed), tqdm(total=total, unit="frame", desc=output.name, disable=not progress) as bar:
        for count, (time, end, frame) in enumerate(itertools.islice(timed_frames(content_video), total), 1):
            times.append(time)
            path = folder / f"{count:06d}.png"
            if job is None and path.exists():  # finished by an earlier run
                prev, prev_content = path, frame
            else:
                if isinstance(prev, Path):  # resuming: start from the last finished frame
                    size = open_image(prev, name="frame").size
                    prev = _tensor(prev, size)
                start = prev if job is None else None  # a running job continues from its own pixels
                if flow and prev is not None:
                    start = _moved(prev, prev_content, frame, size, bool(style_options.get("luminance_only")))
                job = _job_for(job, frame, start, style_list, style_options)
                first = prev is None  # coarse to fine, as a picture; later frames go on from the last
                run(job, plan(job.full_size, num_steps_first, coarse_steps) if first else num_steps_per_frame)
                try:
                    save_image(job.image_tensor(), path, option=None)
                except PasticheError as e:  # another --output would start over: the frames are kept
                    raise PasticheError(f"{e}; then run again: the finished frames in '{folder}' are kept") from None
                prev, prev_content, size = job.pixels.detach().cpu().float() / 255, frame, job.size
                bar.set_postfix(loss=f"{job.loss:.4g}")
            bar.update()
            if on_frame is not None:
                on_frame(count, total, None if job is None else job.loss)
    last = times[-1]
    times.append(None if last is None else end if end is not None else last + 1 / info.fps)
    _join(folder, count, output, info, content_video, times)
    return output


def _job_for(job: Optional[StyleTransfer], frame: Image.Image, start: Optional[torch.Tensor], styles: List[ImageLike],
              style_options: dict) -> StyleTransfer:
    """The job for ``frame``, starting from ``start`` (None: from the job's own pixels, or as
    ``style_options`` say for a new job): ``job`` given the new content, or a new one."""
    if job is None:
        return StyleTransfer(frame, styles, **{**style_options, **({} if start is None else {"init": start})})
    job.set_content(frame, init=start)
    return job


def _check_video_options(num_steps_per_frame: int, flow: bool, progress: bool, max_frames: Optional[int],
                         on_frame: Optional[Callable]) -> None:
    """Refuse :func:`stylize_video`'s own options where they are not what they must be."""
    if not whole(num_steps_per_frame):
        raise PasticheError(f"num_steps_per_frame must be a whole number of steps, at least 1, got"
                            f" {num_steps_per_frame!r}")
    check_flag(flow, "flow")
    check_flag(progress, "progress")
    if on_frame is not None and not callable(on_frame):
        raise PasticheError(f"on_frame must be a function of (frame, total, loss), got {on_frame!r}")
    if max_frames is not None and not whole(max_frames):
        raise PasticheError(f"max_frames must be a whole number of frames, at least 1, got {max_frames!r}")


def _check_first_frame(content_video: PathLike, styles: List[ImageLike], num_steps: int, coarse_steps: Sequence[int],
                       style_options: dict) -> None:
    """Build the first frame's job and its first level's targets, so that a bad option, style
    image or size is refused before any frame is made; a frame too small is named as the clip's."""
    try:
        first = StyleTransfer(next(read_frames(content_video)), styles, **style_options)
        first.resize(*plan(first.full_size, num_steps, coarse_steps)[0][0])  # "too small" shows here
    except PasticheError as e:  # the frame is a PIL image to the engine; to the user, their clip's
        raise PasticheError(str(e).replace(describe_source(Image.Image(), "content image"),
                                           f"frame 1 of '{os.fspath(content_video)}'")) from None


def _use_frames_dir(folder: Path, settings: dict) -> None:
    """Create ``folder`` and record ``settings`` in it, unless it holds finished frames made with
    other ones. A record without frames (a run stopped in its first one) is replaced, not held
    against the next run."""
    try:
        folder.mkdir(exist_ok=True)
        record = folder / "settings.json"
        recorded = json.loads(record.read_text()) if record.exists() else settings
        if isinstance(recorded, dict) and isinstance(recorded.get("options"), dict):  # one an older pastiche wrote
            recorded["options"] = _in_use(recorded["options"])
        if isinstance(recorded, dict):  # one kept no seed before session 41: any goes on with its frames
            recorded.setdefault("seed", settings["seed"])
        if recorded != settings and has_finished_frames(folder):
            raise PasticheError(f"frames in '{folder}' were made with other settings ({_changed(recorded, settings)});"
                                f" delete that directory to start over, or choose another {option_name('output')}")
        record.write_text(json.dumps(settings, indent=1))
    except (OSError, ValueError) as e:
        raise PasticheError(f"cannot use frames directory '{folder}': {getattr(e, 'strerror', None) or e};"
                            f" choose another {option_name('output')}") from None


def _moved(prev: torch.Tensor, prev_content: ImageLike, frame: ImageLike, size: Tuple[int, int],
           luminance_only: bool) -> torch.Tensor:
    """The previous result ``prev`` moved by the optical flow from the previous content frame to
    ``frame``; where nothing maps, ``frame`` itself (its luminance for a luminance-only run)."""
    cur = _tensor(frame, size)
    return warp_previous(prev, _tensor(prev_content, size), cur, fill=color.luminance(cur) if luminance_only else cur)


def _join(folder: Path, count: int, output: Path, info: VideoInfo, content_video: PathLike,
          times: List[Optional[Fraction]]) -> None:
    """Write ``output`` from the first ``count`` frames in ``folder``, at the clip's ``times``
    (starts, then the last one's end; kept only where all are known and in order) and with its
    sound."""
    paths = [folder / f"{i + 1:06d}.png" for i in range(count)]
    timed = None not in times and all(map(operator.lt, times, times[1:]))
    try:
        encode_video(paths, output, info.fps,
               audio_from=content_video if info.has_audio and output.suffix.lower() != ".gif" else None,
               times=times if timed else None, option=None)
    except PasticheError as e:  # a run with the same --output joins the frames again
        raise PasticheError(f"{e}; the frames in '{folder}' are kept: run again to join them") from None
