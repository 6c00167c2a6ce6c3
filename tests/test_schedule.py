"""Coarse-to-fine schedules: plan's levels, run's loop and callback, transfer in one call."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

import pastiche
from pastiche.engine import StyleTransfer
from pastiche.errors import PasticheError
from pastiche.schedule import DEFAULT_COARSE_STEPS, DEFAULT_NUM_STEPS, default_coarse_steps, plan, run, transfer

TINY = dict(content_layers=["block2_relu1"], style_layers=["block1_relu1", "block2_relu1"], size=48, device="cpu")


def test_run_steps_a_fresh_job(content_path, style_path):
    job = StyleTransfer(content_path, style_path, **TINY)  # never stepped nor evaluated
    assert run(job, 4) is job
    assert job.step_count == 4 and job.size == (48, 40) and math.isfinite(job.loss)


def test_run_steps_and_honours_the_callback(content_path, style_path):
    job = StyleTransfer(content_path, style_path, **TINY)
    job.evaluate()
    assert run(job, 4) is job
    assert job.step_count == 4 and job.size == (48, 40) and math.isfinite(job.loss)
    seen = []
    run(job, 10, callback=lambda j: seen.append(j.step_count) or j.step_count == 6)
    assert seen == [5, 6] and job.step_count == 6


def test_transfer_returns_a_pil_image_and_calls_back(content_array, style_array):
    seen = []

    def callback(job):
        seen.append((job.step_count, job.loss, job.image().size))
        return job.step_count == 3  # stop early

    image = transfer(content_array, style_array, num_steps=10, seed=0, callback=callback, **TINY)
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (48, 40)
    assert [s for s, _, _ in seen] == [1, 2, 3]
    assert all(math.isfinite(loss) and size == (48, 40) for _, loss, size in seen)
    assert pastiche.transfer is transfer


def test_schedule_and_callback_are_checked_before_any_step(content_path, style_path):
    job = StyleTransfer(content_path, style_path, **TINY)
    for schedule in (2.5, "3"):
        with pytest.raises(PasticheError, match="whole number of steps"):
            run(job, schedule)
    for coarse_steps in (5, "10,5"):
        with pytest.raises(PasticheError, match="coarse_steps must be a sequence"):
            transfer(content_path, style_path, coarse_steps=coarse_steps, **TINY)
    with pytest.raises(PasticheError, match="callback"):
        run(job, 2, callback=5)
    assert job.step_count == 0


def test_transfer_leaves_torchs_random_state_and_settings_as_they_were(content_path, style_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    transfer(content_path, style_path, num_steps=1, coarse_steps=(), seed=7, deterministic=True,
             init="random", **TINY)
    assert torch.equal(torch.rand(3), expected)
    assert not torch.are_deterministic_algorithms_enabled()


def test_default_plan_halves_each_level_and_skips_those_under_32_px():
    """The default schedule at README's sizes: the 1/8 level of a 256 px image (32x24) is left out."""
    assert plan((256, 192), DEFAULT_NUM_STEPS, DEFAULT_COARSE_STEPS) == [
        ((64, 48), 100), ((128, 96), 30), ((256, 192), 125)]
    assert plan((577, 433), DEFAULT_NUM_STEPS, DEFAULT_COARSE_STEPS) == [
        ((72, 54), 100), ((144, 108), 100), ((288, 216), 30), ((577, 433), 125)]
    assert plan((384, 255), 5, (1, 2, 3)) == [((48, 32), 1), ((96, 64), 2), ((192, 128), 3), ((384, 255), 5)]


def test_run_goes_through_each_level_at_its_size(content_path, style_path):
    job = StyleTransfer(content_path, style_path, **{**TINY, "size": 96})
    schedule = plan(job.full_size, 2, (3,))
    assert schedule == [((48, 40), 3), ((96, 80), 2)]
    sizes = []
    run(job, schedule, callback=lambda j: sizes.append(j.size))
    assert sizes == [(48, 40)] * 3 + [(96, 80)] * 2 and job.step_count == 5


def test_the_progress_bar_counts_pixels_stepped_and_names_the_step(content_path, style_path, monkeypatch):
    import tqdm.auto

    seen = []  # (fraction of the bar, its text after the time) after each step

    class Recorder(tqdm.auto.tqdm):
        def update(self, n=1):
            super().update(n)
            seen.append((self.n / self.total, self.postfix))

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    run(StyleTransfer(content_path, style_path, **TINY), [((24, 20), 2), ((48, 40), 2)], progress=True)
    # a 48x40 px step counts 4 of a 24x20 one: the coarse level is 960 of 4,800 px stepped, where
    # counting steps would fill half the bar
    assert [round(fraction, 3) for fraction, _ in seen] == [0.1, 0.2, 0.6, 1.0]
    assert [text.split(", loss=")[0] for _, text in seen] == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]
    assert [text.split(", size=")[1] for _, text in seen] == ["24x20", "24x20", "48x40", "48x40"]


def test_plan_takes_any_sequence_of_step_counts():
    expected = plan((256, 192), 5, [3, 2])
    assert plan((256, 192), 5, range(3, 1, -1)) == expected == plan((256, 192), 5, np.array([3, 2]))


def test_hand_written_schedules_and_plans_are_checked(content_path, style_path):
    job = StyleTransfer(content_path, style_path, **TINY)
    for schedule in ([((48, 40), -3)], [((48, 40), 2.5)], [(48, 40)], [((48, 40),)], [((48, 0), 1)]):
        with pytest.raises(PasticheError, match=r"^a schedule is a list of \(\(width, height\), steps\) levels"):
            run(job, schedule)
    with pytest.raises(PasticheError, match="^run steps a pastiche.StyleTransfer, got str$"):
        run("job", 1)
    for full in ((0, 0), None, "ab", (256, 192, 3), (256.0, 192)):
        with pytest.raises(PasticheError, match=r"^plan needs the full size as \(width, height\)"):
            plan(full, 5)
    with pytest.raises(PasticheError, match="^coarse_steps must be in order, coarsest first; got a set$"):
        plan((256, 192), 5, {3, 4})
    assert job.step_count == 0 and job.size is None


def test_transfer_keeps_the_image_so_far_on_an_error_or_ctrl_c(content_path, style_path):
    with pytest.raises(PasticheError) as info:  # the loss overflows float32 at once
        transfer(content_path, style_path, num_steps=3, coarse_steps=(), content_weight=1e308, **TINY)
    # no step done: the starting image is no result (the command writes nothing either)
    assert info.value.image is None and not str(info.value).endswith(".image)")

    def broken_display(job):  # a callback's own bug, minutes into a run
        if job.step_count == 2:
            raise ValueError("bad format")
    with pytest.raises(ValueError, match="^bad format$") as info:
        transfer(content_path, style_path, num_steps=3, coarse_steps=(), callback=broken_display, seed=0, **TINY)
    two = transfer(content_path, style_path, num_steps=2, coarse_steps=(), seed=0, **TINY)
    assert np.array_equal(info.value.image, two)  # before, the exception had no image: the work was lost

    def stop(job):
        if job.step_count == 3:
            raise KeyboardInterrupt
    options = {**TINY, "size": 96}  # a 48x40 level, then 96x80: interrupted at the coarse level's last step
    with pytest.raises(KeyboardInterrupt) as info:
        transfer(content_path, style_path, num_steps=5, coarse_steps=(3,), callback=stop, seed=0, **options)
    three = transfer(content_path, style_path, num_steps=5, coarse_steps=(3,), seed=0,
                     callback=lambda job: job.step_count == 3, **options)
    assert info.value.image.size == three.size == (96, 80) and np.array_equal(info.value.image, three)


def test_an_error_that_leaves_no_memory_for_the_image_still_gets_through(content_path, style_path, monkeypatch):
    def no_memory(self, *, size=None):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    objective = StyleTransfer.objective

    def poisoned(self, pixels, **kw):  # the second step's loss is NaN
        return objective(self, pixels, **kw) * (float("nan") if self.step_count == 1 else 1.0)
    monkeypatch.setattr(StyleTransfer, "objective", poisoned)
    monkeypatch.setattr(StyleTransfer, "image_tensor", no_memory)
    with pytest.raises(PasticheError, match=r"became nan at step 2") as info:
        transfer(content_path, style_path, num_steps=3, coarse_steps=(), **TINY)
    assert info.value.image is None and not str(info.value).endswith(".image)")


def test_a_caller_in_inference_mode_gets_a_picture(content_path, style_path):
    """torch.inference_mode() turns gradients off; before, torch's own error came from backward, and
    a job made in it could not be stepped outside it."""
    expected = transfer(content_path, style_path, num_steps=2, coarse_steps=(), seed=0, **TINY)
    with torch.inference_mode():
        assert np.array_equal(transfer(content_path, style_path, num_steps=2, coarse_steps=(), seed=0, **TINY),
                              expected)
        job = StyleTransfer(content_path, style_path, **TINY)
        job.evaluate()
    assert math.isfinite(job.step()) and job.step_count == 1
    with pytest.raises(PasticheError, match="^progress must be True or False, got 'no'$"):
        run(job, 1, progress="no")


@pytest.mark.filterwarnings("ignore:init image .* is stretched")  # the square style as a 6:5 start
def test_an_init_image_starts_at_full_size_unless_told(content_path, style_path):
    assert default_coarse_steps() == default_coarse_steps("random") == DEFAULT_COARSE_STEPS
    assert default_coarse_steps(style_path) == default_coarse_steps(Image.new("RGB", (8, 8))) == ()
    sizes = []
    transfer(content_path, style_path, num_steps=2, init=style_path, callback=lambda j: sizes.append(j.size),
             **{**TINY, "size": 96})
    assert sizes == [(96, 80)] * 2
    sizes.clear()
    transfer(content_path, style_path, num_steps=2, coarse_steps=(1,), init=style_path,
             callback=lambda j: sizes.append(j.size), **{**TINY, "size": 96})
    assert sizes == [(48, 40), (96, 80), (96, 80)]


def test_every_error_from_transfer_has_an_image_attribute(content_path, style_path):
    for options in (dict(optimizer="sgd"), dict(num_steps=0), dict(style_size=1)):
        with pytest.raises(PasticheError) as info:
            transfer(content_path, style_path, coarse_steps=(), **{**TINY, **options})
        assert info.value.image is None  # no picture yet: the attribute is there all the same
    for flag in ("deterministic", "progress"):
        with pytest.raises(PasticheError, match=f"^{flag} must be True or False, got 'no'$"):
            transfer(content_path, style_path, **{**TINY, flag: "no"})


def test_a_size_given_as_a_list_is_the_same_level(content_path, style_path):
    """A list [w, h] is not job.size's tuple: the job must not be resized to the size it has,
    which would throw L-BFGS's history away."""
    losses = {}
    for kind in (tuple, list):
        job = StyleTransfer(content_path, style_path, **TINY)
        run(job, [(kind(job.full_size), 2)])
        run(job, plan(kind(job.full_size), 2))
        losses[kind] = job.loss
    assert losses[list] == losses[tuple]
    job = StyleTransfer(content_path, style_path, **TINY)
    assert run(job, (((48, 40), 1),)).step_count == 1  # a tuple of levels is a schedule too


def test_a_misspelt_option_is_named_as_transfer_s_with_the_nearest_one(content_path, style_path):
    """Python's own TypeError named StyleTransfer.__init__, which the user never called."""
    with pytest.raises(TypeError, match=r"^transfer\(\) got an unexpected keyword argument 'style_weight'; did you"
                                        r" mean 'style_weights'\?$"):
        transfer(content_path, style_path, style_weight=2)
    with pytest.raises(TypeError, match=r"^transfer\(\) got an unexpected keyword argument 'colour'$"):
        transfer(content_path, style_path, colour=1)
