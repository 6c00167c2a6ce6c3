"""pastiche: neural style transfer (Gatys et al.) with a compressed VGG19 inside the package.

    >>> import pastiche
    >>> image = pastiche.transfer("photo.jpg", "painting.jpg", size=256, num_steps=200)
    >>> image.save("out.png")
"""

__version__ = "2.0.0.dev0"

from .engine import StyleTransfer, run, transfer  # noqa: E402
from .errors import PasticheError  # noqa: E402
from .imageio import load_image, save_image  # noqa: E402
from .vgg import LAYER_NAMES, VGG19, vgg19  # noqa: E402

__all__ = ["LAYER_NAMES", "PasticheError", "StyleTransfer", "VGG19", "__version__", "load_image",
           "run", "save_image", "transfer", "vgg19"]
