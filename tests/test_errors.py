"""Messages name options as the user gave them: keywords in Python, flags in the commands."""

import numpy as np
import pytest

import pastiche
from pastiche.errors import PasticheError, command_line, on_command_line, option_name


def test_an_option_is_its_keyword_in_python_and_its_flag_on_the_command_line():
    assert [option_name("size_pixels"), option_name("precision", "float32"), option_name("low_memory", True),
            option_name("styles")] == ["size_pixels", "precision='float32'", "low_memory=True", "styles"]
    with command_line():
        assert [option_name("size_pixels"), option_name("precision", "float32"), option_name("low_memory", True),
                option_name("styles"), option_name("coarse_steps"), option_name("supplemental_devices")] == [
            "--size-pixels", "--precision float32", "--low-memory", "--style", "--schedule", "--supplemental-device"]


def test_command_line_ends_with_its_block_even_on_an_error():
    assert not on_command_line()
    with pytest.raises(KeyError), command_line():
        assert on_command_line()
        raise KeyError
    assert not on_command_line() and option_name("size") == "size"


def test_the_same_mistake_is_named_for_where_it_was_made(tmp_path, capsys):
    """A notebook's ``transfer(..., learning_rate=0)`` names the keyword; the command, the flag."""
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(PasticheError, match="^learning_rate must be a positive number, got 0$"):
        pastiche.transfer(image, image, learning_rate=0)
    with pytest.raises(PasticheError, match=r"^preserve_color and luminance_only exclude each other"):
        pastiche.StyleTransfer(image, image, preserve_color=True, luminance_only=True)
    for name in ("c.png", "s.png"):
        pastiche.save_image(image, tmp_path / name)
    argv = ["-c", str(tmp_path / "c.png"), "-s", str(tmp_path / "s.png"), "-o", str(tmp_path / "o.png")]
    assert pastiche.cli.main(argv + ["--learning-rate", "0"]) == 1
    assert capsys.readouterr().err == "pastiche: error: --learning-rate must be a positive number, got 0.0\n"
    assert pastiche.cli.main(argv + ["--preserve-color", "--luminance-only"]) == 1
    assert capsys.readouterr().err.startswith("pastiche: error: --preserve-color and --luminance-only exclude")
    assert not on_command_line() and sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "s.png"]


def test_every_keyword_the_command_passes_on_is_named_by_a_flag_it_has():
    """The command gives the engine its options by keyword: each one's flag, as errors name it
    there, is one of the command's own (lbfgs_history has none: its messages name the keyword)."""
    import inspect

    from pastiche.cli import build_parser
    from pastiche.schedule import transfer

    flags = {flag for action in build_parser()._actions for flag in action.option_strings}
    keywords = set(inspect.signature(pastiche.StyleTransfer.__init__).parameters) - {"self", "content", "styles"}
    keywords |= {"num_steps", "coarse_steps", "seed", "deterministic", "output", "workspace", "video", "fps"}
    assert {"num_steps", "coarse_steps", "seed", "deterministic"} <= set(inspect.signature(transfer).parameters)
    with command_line():
        unknown = {keyword for keyword in keywords if option_name(keyword) not in flags}
    assert unknown == {"lbfgs_history"}
