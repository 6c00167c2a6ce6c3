"""Tests for pastiche.color: colour matching (preserve-color) and the luminance-only helpers."""

import pytest
import torch

from pastiche.color import luminance, match_color, match_luminance, rgb_to_yiq, with_chroma, yiq_to_rgb


def _stats(image):
    flat = image.reshape(3, -1).double()
    return flat.mean(1), torch.cov(flat, correction=0)


def _images():
    torch.manual_seed(0)
    # Content: warm and strongly correlated channels; style: cool, different spread.
    base = torch.rand(1, 1, 20, 24)
    content = torch.cat([0.2 + 0.7 * base, 0.1 + 0.4 * base + 0.1 * torch.rand(1, 1, 20, 24),
                         0.05 + 0.2 * torch.rand(1, 1, 20, 24)], dim=1)
    style = torch.rand(1, 3, 16, 16) * torch.tensor([0.3, 0.6, 0.9]).view(1, 3, 1, 1) + 0.05
    return content, style


def test_match_color_gives_content_mean_and_covariance():
    content, style = _images()
    result = match_color(style, content)
    assert result.shape == style.shape and result.dtype == torch.float32
    mean, cov = _stats(result)
    content_mean, content_cov = _stats(content)
    torch.testing.assert_close(mean, content_mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(cov, content_cov, atol=1e-4, rtol=0)
    # Not trivially the content: the style's own pattern survives.
    style_mean, _ = _stats(style)
    assert not torch.allclose(style_mean, content_mean, atol=1e-2)


def test_match_color_of_image_with_itself_is_identity():
    content, _ = _images()
    torch.testing.assert_close(match_color(content, content), content, atol=1e-5, rtol=0)


def test_yiq_round_trip():
    torch.manual_seed(1)
    image = torch.rand(2, 3, 7, 9)
    torch.testing.assert_close(yiq_to_rgb(rgb_to_yiq(image)), image, atol=1e-5, rtol=0)
    torch.testing.assert_close(rgb_to_yiq(yiq_to_rgb(image)), image, atol=1e-5, rtol=0)


def test_yiq_of_grey_has_no_chroma_and_y_is_the_grey():
    grey = torch.full((1, 3, 2, 2), 0.4)
    yiq = rgb_to_yiq(grey)
    torch.testing.assert_close(yiq[:, 0], torch.full((1, 2, 2), 0.4), atol=1e-5, rtol=0)
    torch.testing.assert_close(yiq[:, 1:], torch.zeros(1, 2, 2, 2), atol=1e-5, rtol=0)


def test_luminance_is_grey_with_ntsc_weights():
    content, _ = _images()
    y = luminance(content)
    assert y.shape == content.shape
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    expected = 0.299 * content[:, 0] + 0.587 * content[:, 1] + 0.114 * content[:, 2]
    torch.testing.assert_close(y[:, 0], expected, atol=1e-6, rtol=0)


def test_match_luminance_matches_mean_and_std():
    content, style = _images()
    content_y, style_y = luminance(content), luminance(style)
    result = match_luminance(style_y, content_y)
    assert result.mean().item() == pytest.approx(content_y.mean().item(), abs=1e-5)
    assert result.std().item() == pytest.approx(content_y.std().item(), abs=1e-5)
    # An affine map of the style's luminance: perfectly correlated with it.
    corr = torch.corrcoef(torch.stack([result.flatten(), style_y.flatten()]))[0, 1]
    assert corr.item() == pytest.approx(1.0, abs=1e-5)


def test_with_chroma_keeps_content_chroma_and_given_luminance():
    content, style = _images()
    # A luminance near the content's keeps the result inside the RGB cube (no clamping).
    y = luminance(0.8 * content + 0.2 * style.mean())
    result = with_chroma(y, content)
    assert result.shape == content.shape
    assert result.min() >= 0 and result.max() <= 1
    yiq = rgb_to_yiq(result)
    torch.testing.assert_close(yiq[:, 1:], rgb_to_yiq(content)[:, 1:], atol=1e-5, rtol=0)
    torch.testing.assert_close(yiq[:, :1], y[:, :1], atol=1e-5, rtol=0)


def test_with_chroma_desaturates_out_of_gamut_colours_and_keeps_the_luminance():
    """Per-channel clamping moved the luminance that was optimised; now only the colour gives way."""
    content = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)  # pure red
    for level in (1.0, 0.9, 0.05, 0.0):  # white, light and dark luminance under red's chroma
        result = with_chroma(torch.full((1, 3, 2, 2), level), content)
        assert result.min() >= 0 and result.max() <= 1
        assert rgb_to_yiq(result)[:, :1].sub(level).abs().max() < 1e-6
    for dtype in (torch.float16, torch.bfloat16):  # black on grey: 0/0 where the floor underflowed
        assert with_chroma(torch.zeros(1, 3, 1, 1, dtype=dtype), torch.full((1, 3, 1, 1), 0.5, dtype=dtype)).eq(0).all()
    light = with_chroma(torch.full((1, 3, 2, 2), 0.9), content)
    assert light[0, 0, 0, 0] > light[0, 1, 0, 0] + 0.05  # still reddish, as far as it fits


def test_match_color_returns_the_style_s_dtype_and_shape():
    style = torch.rand(1, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    out = match_color(style, torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1)))
    assert out.dtype == style.dtype and out.device == style.device and out.shape == style.shape
    half = match_color(style.bfloat16(), torch.rand(1, 3, 4, 4))
    assert half.dtype == torch.bfloat16
