"""The ``pastiche`` command: parses options and calls the engine. pastiche 1.6.0's flags work."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from tqdm.auto import tqdm

from . import __version__
from .__main__ import interrupts_held, termination_as_interrupt
from .console import OneLineParser, notes, printer
from .devices import PRECISIONS, available_devices, default_device, seed_everything
from .engine import DEFAULT_CONTENT_LAYERS, DEFAULT_SIZE_PIXELS, DEFAULT_STYLE_LAYERS, StyleTransfer
from .errors import PasticheError, command_line
from .imageio import SUPPORTED_EXTENSIONS, check_output_path, check_output_size, save_image
from .memory import release_cuda_libraries, release_freed_memory
from .schedule import DEFAULT_COARSE_STEPS, DEFAULT_NUM_STEPS, default_coarse_steps, plan, run
from .vgg import BUNDLED, DEFAULT_WEIGHTS, LAYER_NAMES
from .video import OUTPUT_EXTENSIONS, check_fps, check_video_output, frames_to_video, is_video
from .video_transfer import FRAME_STEPS, default_frames_dir, has_finished_frames, recorded_seed, stylize_video

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, except for flags, options without one, and help that says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.nargs == 0 or action.default in (None, "", []) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class _ListLayers(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, argparse.SUPPRESS, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        width = len(str(len(LAYER_NAMES) - 1))
        for i, name in enumerate(LAYER_NAMES):
            if i and name[:6] != LAYER_NAMES[i - 1][:6]:
                print()
            print(f"{i: >{width}}. {name}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="pastiche", description="Neural style transfer (Gatys et al.).",
                formatter_class=_HelpFormatter)
    p.add_argument("--version", action="version", version=f"pastiche {__version__}")
    p.add_argument("--list-layers", action=_ListLayers, help="list the VGG19 layer names and exit")
    io = p.add_argument_group("images")
    io.add_argument("--content", "-c", help="content image")
    io.add_argument("--style", "--styles", "-s", dest="styles", metavar="STYLE", nargs="+",
                    action="extend", help="style image(s); repeatable")
    io.add_argument("--output", "-o", help="output image; format from the extension"
                    f" ({', '.join(SUPPORTED_EXTENSIONS)}); default CONTENT_STYLE.png in the current"
                    " directory, numbered -2, -3, ... rather than replace a file (a video --content needs"
                    f" one: {', '.join(OUTPUT_EXTENSIONS)})")
    io.add_argument("--init", help="image file to start from (default: the content image); runs at"
                    " the output size only, unless --schedule says otherwise")
    io.add_argument("--random-init", action="store_true", help="start from noise (overrides --init)")
    io.add_argument("--size", type=int, help="long edge of the output in px; overrides --size-pixels")
    io.add_argument("--size-pixels", type=int, default=DEFAULT_SIZE_PIXELS, help="approximate output pixel count")
    io.add_argument("--style-size", type=int, help="long edge of the style image(s)")
    io.add_argument("--style-size-pixels", type=int, help="approximate style pixel count (default: as the output)")
    io.add_argument("--preserve-color", action="store_true", help="recolour the style to the content's colours")
    io.add_argument("--luminance-only", action="store_true",
                    help="transfer style on luminance only, keeping the content's colours")
    loss = p.add_argument_group("loss")
    loss.add_argument("--content-layers", nargs="*", metavar="LAYER", default=list(DEFAULT_CONTENT_LAYERS),
                      help="layers whose activations the content loss compares (default:"
                           f" {' '.join(DEFAULT_CONTENT_LAYERS)}; see --list-layers)")
    loss.add_argument("--style-layers", nargs="*", metavar="LAYER", default=list(DEFAULT_STYLE_LAYERS),
                      help="layers whose Gram matrices the style loss compares (default:"
                           f" {' '.join(DEFAULT_STYLE_LAYERS)})")
    loss.add_argument("--content-layer-weights", nargs="*", type=float, metavar="WEIGHT",
                      help="one per content layer (default 0.01)")
    loss.add_argument("--style-layer-weights", nargs="*", type=float, metavar="WEIGHT",
                      help="one per style layer (default 10/C² for C channels)")
    loss.add_argument("--content-weight", type=float, default=1.0, help="weight of the content loss")
    loss.add_argument("--style-weights", nargs="*", type=float, metavar="WEIGHT",
                      help="one per style image (default 1/N)")
    loss.add_argument("--tv-weight", type=float, default=0.0, help="total-variation weight")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--num-steps", type=int, default=DEFAULT_NUM_STEPS,
                     help="steps at the output size (after the coarser levels of --schedule)")
    opt.add_argument("--schedule", metavar="STEPS,...",
                     help="steps at each coarser level, coarsest first; each level is half the size"
                          f" of the next (coarse-to-fine; default {','.join(map(str, DEFAULT_COARSE_STEPS))},"
                          " none with --init; 'none' for none)")
    opt.add_argument("--single-scale", action="store_true",
                     help="no coarse levels: --num-steps at the output size only (pastiche 1.6.0)")
    opt.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs", help="L-BFGS or Adam")
    opt.add_argument("--low-memory", action="store_true",
                     help="keep VGG19's kernels quantized, 10 L-BFGS pairs instead of 20, and return"
                          " freed memory to the system at once (Linux/glibc): about a quarter less peak memory"
                          " for 13-22%% more time per step at 500^2 px (README)")
    opt.add_argument("--precision", choices=PRECISIONS, default="auto",
                     help="VGG19's arithmetic: auto is bfloat16 on a CPU that has it in hardware"
                          " (AVX512-BF16, AMX: ~1.6x faster steps), else float32 (README)")
    opt.add_argument("--learning-rate", type=float, default=1.0, help="the optimiser's step size (Adam moves a"
                     " pixel about this many grey levels a step: try 10 with it)")
    opt.add_argument("--pooling", choices=("max", "avg"), default="max", help="VGG19's pooling")
    opt.add_argument("--weights", default=DEFAULT_WEIGHTS,
                     help=f"VGG19 weights: a bundled name ({', '.join(BUNDLED)}) or a file")
    opt.add_argument("--seed", type=int, help="random seed")
    opt.add_argument("--deterministic", action="store_true", help="avoid non-deterministic algorithms")
    dev = p.add_argument_group("devices")
    dev.add_argument("--device", "-d", default=default_device(),
                     help=f"compute device (here: {', '.join(available_devices())})")
    dev.add_argument("--supplemental-device", nargs=2, metavar=("DEVICE", "INDEX"), action="append",
                     dest="supplemental_devices", default=[],
                     help="run layers from INDEX on (see --list-layers) on DEVICE; repeatable")
    out = p.add_argument_group("progress and frames")
    out.add_argument("--no-verbose", action="store_false", dest="verbose", help="print nothing")
    # Defaults None, set by _check_args: a video --content, which has no use for them, refuses them given
    out.add_argument("--info-step", type=int, help="print a 'step elapsed loss' row every N steps (default 100)")
    out.add_argument("--workspace", help="directory for intermediate frames")
    out.add_argument("--workspace-step", type=int, help="save a frame every N steps (default 10)")
    out.add_argument("--workspace-prefix", help="prefix of frame file names (default none)")
    vid = p.add_argument_group("video (all but a GIF output need PyAV: pip install 'pastiche[video]')")
    vid.add_argument("--video", metavar="FILE", help="after the run, join the --workspace frames"
                     f" into this video ({', '.join(OUTPUT_EXTENSIONS)})")
    vid.add_argument("--fps", type=float, help="frame rate of --video, 0.1 to 1000 (default 30; a video"
                     " --content keeps its own; a GIF holds 50 a second at most, in whole hundredths)")
    vid.add_argument("--frame-steps", type=int,
                     help="video content: steps per frame after the first (which gets the whole schedule;"
                          f" default {FRAME_STEPS})")
    vid.add_argument("--no-flow", action="store_true",
                     help="video content: start each frame from the previous result as is, not moved"
                          " by optical flow")
    return p


def default_output(content: str, styles: Sequence[str]) -> Path:
    """CONTENT_STYLE[+STYLE].png in the current directory, numbered so nothing is overwritten."""
    stem = f"{Path(content).stem}_{'+'.join(Path(s).stem for s in styles)}"
    while len(os.fsencode(stem)) > 200:  # long input names: under the filesystems' 255 bytes, with "-N.png"
        stem = stem[:-1]
    path, n = Path(f"{stem}.png"), 2
    while os.path.lexists(path):  # a link leading nowhere takes the name too
        path, n = Path(f"{stem}-{n}.png"), n + 1
    return path


IMAGE_ONLY = {"info_step": 100, "workspace_step": 10, "workspace_prefix": ""}  # options of an image run, defaults


def _check_args(args: argparse.Namespace) -> None:
    for option in ("content", "output", "init", "workspace", "video"):  # "$DIR" with DIR unset, say
        if getattr(args, option) == "":
            raise PasticheError(f"--{option} is empty; give a {'folder' if option == 'workspace' else 'file'} name"
                                + ("" if option == "content" else f", or leave --{option} out"))
    if not args.content or not args.styles:
        raise PasticheError("both --content and --style are required, e.g."
                            " pastiche --content photo.jpg --style painting.jpg")
    args.is_video = is_video(args.content) or (  # an animated GIF becomes one where it is to be one
        Path(args.content).suffix.lower() == ".gif" and Path(args.output or "").suffix.lower() in OUTPUT_EXTENSIONS)
    _check_mode(args)
    for option, default in IMAGE_ONLY.items():
        setattr(args, option, default if getattr(args, option) is None else getattr(args, option))
    for option in ("num_steps", "info_step", "workspace_step", "frame_steps"):  # frame_steps: None unless given
        value = getattr(args, option)
        if value is not None and value < 1:
            raise PasticheError(f"--{option.replace('_', '-')} must be at least 1, got {value}")
    args.start = "random" if args.random_init else Path(args.init) if args.init else "content"  # the init
    try:
        given = args.schedule.strip() if args.schedule is not None else None
        coarse_steps = ([] if given in ("", "none") else [int(n) for n in given.split(",")]) \
            if given is not None else list(default_coarse_steps(args.start))
    except ValueError:
        raise PasticheError(f"--schedule '{args.schedule}' is not a comma-separated list of step"
                            " counts, e.g. --schedule 150,100") from None
    args.coarse_steps = [] if args.single_scale else coarse_steps
    if args.fps is not None:
        check_fps(args.fps)
    if any(sep and sep in args.workspace_prefix for sep in (os.sep, os.altsep)):
        raise PasticheError(f"--workspace-prefix '{args.workspace_prefix}' is a path; give a file-name"
                            " prefix, and the folder with --workspace")
    for device, index in args.supplemental_devices:
        if not index.isdecimal():  # not isdigit: '²' is a digit int() refuses
            raise PasticheError(f"--supplemental-device {device} {index}: INDEX must be a layer number"
                                " (see --list-layers)")


def _check_mode(args: argparse.Namespace) -> None:
    """Refuse the options that only the other kind of --content uses: they would do nothing."""
    if not args.is_video:
        if args.video and not args.workspace:
            raise PasticheError("--video joins the --workspace frames; give --workspace DIR too")
        if args.fps is not None and not args.video:
            raise PasticheError("--fps is the frame rate of --video; give --video FILE too")
        if args.frame_steps is not None or args.no_flow:
            raise PasticheError(f"--{'frame-steps' if args.frame_steps is not None else 'no-flow'} is for a"
                                " video --content (.mp4, .mov, ...); an image --content gets --num-steps")
        return
    if not args.output:
        raise PasticheError("a video --content needs --output, e.g. --output out.mp4")
    if args.workspace or args.video:
        raise PasticheError(f"--{'workspace' if args.workspace else 'video'} is for an image --content; a video"
                            f" --content keeps its finished frames in {default_frames_dir(args.output)}")
    if args.fps is not None:
        raise PasticheError("--fps is for --video; a video --content keeps its own frame rate (and its"
                            " sound in step)")
    for option in IMAGE_ONLY:
        if getattr(args, option) is not None:
            raise PasticheError(f"--{option.replace('_', '-')} is for an image --content; a video --content"
                                " prints a row per frame and keeps every frame")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    release_freed_memory(low_memory=args.low_memory)
    try:
        with termination_as_interrupt(), notes("pastiche", quiet=not args.verbose), command_line():
            _check_args(args)
            release_cuda_libraries([args.device] + [device for device, _ in args.supplemental_devices])
            if args.is_video:
                return _run_video(args)
            inputs = [path for path, _ in _inputs(args)]
            output = check_output_path(args.output or default_output(args.content, args.styles), inputs=inputs)
            if args.video:
                check_video_output(args.video, inputs=inputs, option="video")
            return _run(args, output)
    except PasticheError as e:
        print(f"pastiche: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:  # before the first step: nothing to keep
        print("pastiche: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _options(args: argparse.Namespace) -> dict:
    """StyleTransfer's keyword arguments from the command line (as _check_args left it)."""
    return dict(
        content_layers=args.content_layers, style_layers=args.style_layers,
        content_layer_weights=args.content_layer_weights, style_layer_weights=args.style_layer_weights,
        content_weight=args.content_weight, style_weights=args.style_weights, tv_weight=args.tv_weight,
        init=args.start,
        optimizer=args.optimizer, learning_rate=args.learning_rate, pooling=args.pooling,
        size=args.size, size_pixels=args.size_pixels, style_size=args.style_size,
        style_size_pixels=args.style_size_pixels, preserve_color=args.preserve_color,
        luminance_only=args.luminance_only, device=args.device,
        supplemental_devices=[(d, int(i)) for d, i in args.supplemental_devices], weights=args.weights,
        low_memory=args.low_memory, precision=args.precision)


def _run_video(args: argparse.Namespace) -> int:
    """``--content clip.mp4``: stylise every frame; finished frames survive an interruption."""
    if args.init:  # a file given as --init is an input even where --random-init overrides it, as for images
        check_video_output(args.output, inputs=[args.init])
    # an interrupted run's seed, where it left frames, so that the seed printed is the video's
    seed = args.seed if args.seed is not None else recorded_seed(default_frames_dir(args.output))
    seed = seed_everything(seed, deterministic=args.deterministic)
    frame_steps = FRAME_STEPS if args.frame_steps is None else args.frame_steps
    bar = _bar(args)  # a bar at a terminal; rows for a log
    say, start = printer(print if args.verbose else None), time.perf_counter()

    def row(frame: int, total: int, loss: Optional[float]) -> None:
        if frame == 1:
            say(f"seed: {seed}\n\nframe   elapsed loss\n------- ------- ----")
        say(f"{frame: <7} {time.perf_counter() - start: <7.1f} " + ("kept" if loss is None else f"{loss:.2f}"))
    try:
        path = stylize_video(args.content, args.styles, args.output,
                             num_steps_first=args.num_steps, coarse_steps=args.coarse_steps,
                             num_steps_per_frame=frame_steps, flow=not args.no_flow,
                             seed=seed, progress=bar, on_frame=None if bar else row, **_options(args))
    except KeyboardInterrupt:
        folder = default_frames_dir(args.output)
        print(f"pastiche: interrupted; finished frames are kept in {folder}, run again to resume"
              if has_finished_frames(folder) else "pastiche: interrupted before the first frame was finished;"
              " nothing kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    say(f"wrote {path} (seed {seed})")  # a random seed's run can be repeated
    return 0


def _run(args: argparse.Namespace, output: Path) -> int:
    start = time.perf_counter()
    seed = seed_everything(args.seed, deterministic=args.deterministic)
    job = StyleTransfer(args.content, args.styles, **_options(args))
    check_output_size(output, job.full_size)  # now that the size is known, before any work
    # A bar for people at a terminal; pastiche 1.6.0's text rows for logs (and above the bar).
    bar = _bar(args)
    say = printer((tqdm.write if bar else print) if args.verbose else None)  # tqdm's keeps rows above it
    schedule = plan(job.full_size, args.num_steps, args.coarse_steps)
    job.resize(*schedule[0][0])  # targets at the first level; errors like "too small" show here
    total = sum(n for _, n in schedule)

    def frame_name(step: int) -> str:  # pastiche 1.6.0's: zero-padded to the total, so names sort
        return f"{args.workspace_prefix}{step:0{len(str(total))}d}.png"

    if args.workspace:  # only now that every input has been checked
        _make_workspace(args, output, [frame_name(k) for k in range(0, total + 1, args.workspace_step)])
    dtype = str(job.dtype).replace("torch.", "")
    say(f"device: {job.device} ({dtype})\nseed: {seed}\nsize: {job.full_size[0]}x{job.full_size[1]}")
    say("schedule: " + ", ".join(f"{w}x{h} px {n} steps" for (w, h), n in schedule))

    frames: List[Tuple[int, Path]] = []  # this run's (step, file), for --video

    def frame(job: StyleTransfer) -> None:
        step = job.step_count
        if args.workspace and step % args.workspace_step == 0:
            path = Path(args.workspace) / frame_name(step)
            # At the output size on every level, as all of pastiche 1.6.0's frames are: a video
            # tool joining them (ffmpeg's image2) needs one size for the whole sequence.
            frames.append((step, save_image(job.image_tensor(size=job.full_size), path, option="workspace")))
        if step % args.info_step == 0:
            say(f"{step: <4} {time.perf_counter() - start: <7.1f} {job.loss:.2f}")

    say("\nstep elapsed loss\n---- ------- ----")
    if args.verbose:
        job.evaluate()  # the step-0 row shows the starting loss, as pastiche 1.6.0's does
    frame(job)
    try:
        run(job, schedule, callback=frame, progress=bar)
    except KeyboardInterrupt:
        if job.step_count == 0:  # the starting image is all there is: not a result to write
            print("pastiche: interrupted before the first step was done; no output written", file=sys.stderr)
            return EXIT_INTERRUPTED
        return _interrupted(job, _kept(job, output, args), args)
    except PasticheError as e:  # e.g. a NaN loss: keep the last good image, then report
        if job.step_count == 0:  # the starting image is all there is: not a result to write
            raise PasticheError(f"{e}; nothing written") from None
        raise PasticheError(f"{e}; {_kept(job, output, args)}") from None
    with interrupts_held() as caught:  # the finished picture is written whole, whenever Ctrl-C comes
        output = _keep(job, output, args)
    if caught:
        return _interrupted(job, f"saved {output}", args)
    say(f"wrote {output}")
    if args.video:  # this run's frames, not others in the folder, ending on the result
        last = [] if frames and frames[-1][0] == job.step_count else [output]
        try:
            video = frames_to_video([path for _, path in frames] + last, args.video, fps=args.fps or 30,
                                    option="video")
        except PasticheError as e:
            raise PasticheError(f"{e} (the picture is saved: {output})") from None
        except KeyboardInterrupt:
            return _interrupted(job, f"saved {output}", args)
        say(f"wrote {video}")
    return 0


def _interrupted(job: StyleTransfer, kept: str, args: argparse.Namespace) -> int:
    """Say, when Ctrl-C stopped the run, at which step, where the picture went (``kept``) and how
    to make the --video that was not made; the exit status."""
    unmade = (f"; no --video made (pastiche-video {shlex.quote(args.workspace)} -o {shlex.quote(args.video)}"
              " joins the frames)" if args.video else "")
    print(f"pastiche: interrupted at step {job.step_count}; {kept}{unmade}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _keep(job: StyleTransfer, output: Path, args: argparse.Namespace) -> Path:
    """Save the job's picture at full size to ``output``, and return where it went. A default
    name (no --output) was free when the run began; if a file has taken it since (another run's
    with the same inputs), the next free one is used, so a default name never replaces anything.
    If saving fails when the work is done (the disk filled up, the folder went away), save it in
    the temporary folder instead, in a new file of its own, and raise the error naming that
    file: the run's work is not lost."""
    image = job.image_tensor(size=job.full_size)
    try:
        while True:
            try:
                return save_image(image, output, replace=bool(args.output))
            except FileExistsError as e:
                fresh = default_output(args.content, args.styles)
                if fresh == output:  # free to look at, yet not to take: no other run's file
                    raise PasticheError(f"cannot write output '{output}': {e.strerror or e}; choose an --output") \
                        from None
                output = fresh
    except PasticheError as e:
        try:  # mkstemp: a name no other file has, not a link someone could have laid there
            fd, spare = tempfile.mkstemp(prefix=f"pastiche-{output.stem[:64]}-", suffix=".png")
            os.close(fd)
            save_image(image, spare)
        except (OSError, PasticheError):  # nowhere to put it: the first error is the one to fix
            raise e from None
        raise PasticheError(f"{e}; the picture is kept in {spare}") from None


def _kept(job: StyleTransfer, output: Path, args: argparse.Namespace) -> str:
    """"saved OUTPUT", or :func:`_keep`'s error, which names where the picture went instead: for
    a run that stops with a message of its own (Ctrl-C, a NaN loss)."""
    try:
        with interrupts_held():  # a second Ctrl-C while it is saved: already stopping
            return f"saved {_keep(job, output, args)}"
    except PasticheError as e:
        return str(e)


def _inputs(args: argparse.Namespace) -> List[Tuple[str, str]]:
    """(path, what it is) for each image file the run reads, which nothing it writes may replace."""
    return [(args.content, "content image"), *((s, "style image") for s in args.styles),
            *([(args.init, "init image")] if args.init else [])]


def _make_workspace(args: argparse.Namespace, output: Path, names: List[str]) -> None:
    """Create the --workspace folder, once it is known to be neither the output nor the video, and
    that none of the frames ``names`` it will get is an input or the output: one would replace
    the other."""
    folder = args.workspace
    for path, option in ((output, "--output"), (args.video, "--video")):
        if path and os.path.realpath(folder) == os.path.realpath(path):
            raise PasticheError(f"--workspace '{folder}' is also the {option} file; choose another folder")
    # Through links, as save_image writes: a frame that is a link to an input, an input that is a
    # link to a frame, a folder reached by two paths
    real = {os.path.realpath(path): (path, what) for path, what in [*_inputs(args), (output, "--output")]}
    for name in names:
        path, what = real.get(os.path.realpath(os.path.join(folder, name)), (None, None))
        if path is not None:
            raise PasticheError(f"a --workspace frame would be the same file as {what} '{path}'; choose"
                                " another --workspace or --workspace-prefix")
    try:
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:  # exist_ok covers folders only
        raise PasticheError(f"--workspace '{folder}' is a file, not a folder; choose a folder"
                            " (it is created if missing)") from None
    except OSError as e:
        raise PasticheError(f"cannot create --workspace '{folder}': {e.strerror}; choose another"
                            " folder") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PasticheError(f"--workspace '{folder}' is not writable; choose another folder")


def _bar(args: argparse.Namespace) -> bool:
    """Whether to show a progress bar: for a person at a terminal (stderr closed, ``2>&-``: none)."""
    return bool(args.verbose and sys.stderr is not None and sys.stderr.isatty())
