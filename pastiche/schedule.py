"""Coarse-to-fine runs (Gatys et al. 2017, "Controlling Perceptual Factors"): the levels a
picture is optimised at, the loop that steps a :class:`~pastiche.engine.StyleTransfer` through
them, and :func:`transfer`, a whole picture in one call.

A schedule is a list of ((width, height), steps), coarsest first; each level starts from the
previous level's image, upsampled (:meth:`StyleTransfer.resize`).
"""

from __future__ import annotations

from contextlib import suppress
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

from PIL import Image

from .checks import MAX_PIXELS, check_flag, pixel_count, whole
from .devices import seeded
from .engine import INIT_KEYWORDS, OUT_OF_MEMORY, StyleTransfer, check_keywords
from .errors import PasticheError, option_name
from .imageio import ImageLike

# Coarse-to-fine (Gatys et al. 2017): steps at 1/8, 1/4 and 1/2 of the output size, then at full
# size; levels under MIN_COARSE_SIDE are skipped (1/8 of a 256 px image is). Many cheap coarse
# steps settle the layout; few at 1/2, whose steps cost 4x those at 1/4 and whose blurry
# upsampled result the full size has to redo anyway: ~20 full-size steps whatever came before,
# so each coarse step delays the first good full-size picture. 100 steps at 1/4 rather than 150
# bring it ~1.3 s sooner at 256 px, 5 more at full size take the time saved, and the 1/8 level
# wins back at ≈500² px what 50 fewer steps at 1/4 cost (README, "Why the defaults").
DEFAULT_COARSE_STEPS = (100, 100, 30)
DEFAULT_NUM_STEPS = 125
MIN_COARSE_SIDE = 32  # a coarser level would be too small to carry style; it is skipped

Schedule = List[Tuple[Tuple[int, int], int]]  # ((width, height), steps) per level, coarse to fine
Callback = Callable[[StyleTransfer], Optional[bool]]  # after each step; a true value stops the run


def default_coarse_steps(init: object = "content") -> Tuple[int, ...]:
    """The coarse levels a run gets unless told: DEFAULT_COARSE_STEPS, or none when it starts from
    an image (``init`` other than "content" or "random"). Such an image already holds the layout
    and detail that the coarse levels would make, and they would start from it shrunk to an
    eighth: pastiche 1.6.0's way to a large picture (a result given as ``--init`` to a run at
    twice the size) would lose the detail it was given."""
    return DEFAULT_COARSE_STEPS if isinstance(init, str) and init in INIT_KEYWORDS else ()


def plan(full: Tuple[int, int], num_steps: int, coarse_steps: Sequence[int] = ()) -> Schedule:
    """Coarse-to-fine levels: ``num_steps`` at ``full`` (width, height), and before it one level
    per entry of ``coarse_steps`` (coarsest first), each half the size of the next. Coarse levels
    whose short side would be under MIN_COARSE_SIDE px are left out."""
    if isinstance(coarse_steps, (str, bytes)) or not isinstance(coarse_steps, Iterable):
        raise PasticheError(f"coarse_steps must be a sequence of step counts, one per coarser level, got"
                            f" {coarse_steps!r}")
    if not (isinstance(full, (tuple, list)) and len(full) == 2 and all(map(pixel_count, full))):
        raise PasticheError(f"plan needs the full size as (width, height) in whole pixels, from 1 to"
                            f" {MAX_PIXELS}, got {full!r}")
    if isinstance(coarse_steps, (set, frozenset, dict)):
        raise PasticheError(f"coarse_steps must be in order, coarsest first; got a {type(coarse_steps).__name__}")
    steps = list(coarse_steps) + [num_steps]
    for n in steps:
        if not whole(n):
            raise PasticheError(f"every level needs a whole number of steps, at least 1, got {n!r}"
                                f" (see {option_name('num_steps')}, {option_name('coarse_steps')})")
    full = tuple(full)
    levels = [(full, num_steps)]
    for k, n in enumerate(reversed(steps[:-1]), start=1):
        w, h = (max(1, round(d / 2 ** k)) for d in full)
        if min(w, h) >= MIN_COARSE_SIDE:
            levels.append(((w, h), n))
    return levels[::-1]


def _checked(schedule: list) -> Schedule:
    """A hand-written schedule, as :func:`plan` makes them: ((width, height), steps) per level."""
    for level in schedule:
        ok = isinstance(level, (tuple, list)) and len(level) == 2
        size, steps = level if ok else (None, None)
        if not (ok and isinstance(size, (tuple, list)) and len(size) == 2 and all(map(whole, size))
                and whole(steps)):
            raise PasticheError(f"a schedule is a list of ((width, height), steps) levels in whole numbers,"
                                f" at least 1 (see pastiche.schedule.plan), got the level {level!r}")
    return [(tuple(size), steps) for size, steps in schedule]  # (w, h) as job.size has it


def run(job: StyleTransfer, schedule: Union[int, Schedule], *, callback: Optional[Callback] = None,
        progress: bool = False) -> StyleTransfer:
    """Step ``job`` through ``schedule`` (or just N steps at its current size), resizing between
    levels. ``callback(job)`` after each step may return a true value to stop early. ``progress`` shows a
    tqdm bar (notebook-aware) with the step, the loss, the level's size and the time left."""
    if not isinstance(job, StyleTransfer):
        raise PasticheError(f"run steps a pastiche.StyleTransfer, got {type(job).__name__}")
    check_flag(progress, "progress")
    schedule = (_checked(schedule) if isinstance(schedule, (list, tuple))
                else plan(job.size or job.full_size, schedule))
    if callback is not None and not callable(callback):
        raise PasticheError(f"callback must be a function of the job, got {callback!r}")
    from tqdm.auto import tqdm

    # The bar counts pixels stepped, not steps: a step's time grows with its pixel count. Counted
    # in steps, the default schedule's coarse levels (230 of 355 steps at 577x433 px, 11 % of the
    # pixels stepped and 12 % of the time) filled most of the bar: at 256 px it read 47 % and 6 s
    # left at 3 s into a 30 s run.
    total, done = sum(n for _, n in schedule), 0
    with tqdm(total=sum(w * h * n for (w, h), n in schedule), disable=not progress, dynamic_ncols=True,
              bar_format="{l_bar}{bar}| [{elapsed}<{remaining}{postfix}]") as bar:
        for size, steps in schedule:
            if size != job.size:
                job.resize(*size)
            for _ in range(steps):
                job.step()
                done += 1
                bar.set_postfix_str(f"step {done}/{total}, loss={job.loss:.4g}, size={size[0]}x{size[1]}",
                                    refresh=False)
                bar.update(size[0] * size[1])
                if callback is not None and callback(job):
                    return job
    return job


def _image_so_far(job: Optional[StyleTransfer]) -> Optional[Image.Image]:
    """The job's latest good image at full size, for an error on its way out; None if there is no
    picture yet (no step done: the starting image is not a result), or if making it fails too
    (memory), which must not hide the first error."""
    if job is None or job.size is None or job.step_count == 0:
        return None
    try:
        return job.image(size=job.full_size)
    except (PasticheError, MemoryError, RuntimeError) as error:
        if isinstance(error, RuntimeError) and not any(m in str(error) for m in OUT_OF_MEMORY):
            raise  # a fault, not a lack of memory: it must be seen
        return None


def transfer(content: ImageLike, style: Union[ImageLike, Sequence[ImageLike]], *,
             num_steps: int = DEFAULT_NUM_STEPS, coarse_steps: Optional[Sequence[int]] = None,
             seed: Optional[int] = None, deterministic: bool = False, callback: Optional[Callback] = None,
             progress: bool = False, **options) -> Image.Image:
    """Stylise ``content`` with ``style`` (one image or a list) and return an RGB PIL image.

    ``num_steps`` run at the output size, after one coarser level per entry of ``coarse_steps``
    (see :func:`plan`; default :func:`default_coarse_steps`, i.e. DEFAULT_COARSE_STEPS, or none
    when ``init`` is an image). ``options`` are :class:`StyleTransfer`'s keyword arguments;
    ``callback(job)`` runs after every step with the :class:`StyleTransfer` (``job.step_count``,
    ``job.loss``: the loss of the image the step started from, ``job.image()``) and may return a
    true value to stop early. ``seed`` (random if None) and ``deterministic`` hold for this call
    only: torch's random state and determinism settings are as they were afterwards (they are
    process-wide, so seeded calls in two threads at once do not repeat). Work is not lost: a
    KeyboardInterrupt (Ctrl-C, a notebook's stop) or a PasticheError from this call has an
    ``image`` attribute, the latest good picture at full size once a step is done (None before,
    or if no memory was left to make it); so has any other Exception (one a ``callback`` raised:
    a notebook's display code), but not SystemExit or GeneratorExit, which mean the process or
    the generator is ending.
    """
    check_keywords(options, "transfer")
    check_flag(deterministic, "deterministic")
    check_flag(progress, "progress")
    if coarse_steps is None:
        coarse_steps = default_coarse_steps(options.get("init", "content"))
    job = None
    try:
        with seeded(seed, deterministic=deterministic):
            job = StyleTransfer(content, style, **options)
            run(job, plan(job.full_size, num_steps, coarse_steps), callback=callback, progress=progress)
            return job.image(size=job.full_size)  # full size even if a callback stopped a coarse level
    except (KeyboardInterrupt, Exception) as e:
        image = _image_so_far(job)
        if isinstance(e, (KeyboardInterrupt, PasticheError)) or not hasattr(e, "image"):  # not a callback's own
            with suppress(AttributeError, TypeError):  # an exception type that takes no attributes
                e.image = image
        if image is not None and isinstance(e, PasticheError) and len(e.args) == 1:
            e.args = (f"{e} (the image so far is this error's .image)",)
        raise
