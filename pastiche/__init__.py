"""pastiche: neural style transfer (Gatys et al.) with a compressed VGG19 inside the package.

    >>> import pastiche
    >>> image = pastiche.transfer("photo.jpg", "painting.jpg", size=256, num_steps=200)
    >>> image.save("out.png")
"""

__version__ = "2.0.0.dev0"

import os as _os  # noqa: E402
import sys as _sys  # noqa: E402

# On CPU, convolutions run on NNPACK's thread pool and the other ops on OpenMP's. OpenMP threads
# that spin while waiting for work steal the cores NNPACK needs (and the other way round): on 2
# cores a 64 px step took 0.29 s spinning and 0.11 s passive (README). It only takes effect if set
# before torch is first imported, so a user's own setting or an earlier import wins.
# THP_MEM_ALLOC_ENABLE asks the kernel for 2 MB pages for torch's CPU tensors of 2 MB or more: a
# new feature map then costs one page fault per 2 MB instead of per 4 KB, and the big maps are new
# on every step (at 577x433 with --low-memory: 2.1 instead of 2.85 s per step; README).
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .engine import StyleTransfer, run, transfer  # noqa: E402
from .errors import PasticheError  # noqa: E402
from .imageio import load_image, save_image  # noqa: E402
from .vgg import LAYER_NAMES, VGG19, vgg19  # noqa: E402

__all__ = ["LAYER_NAMES", "PasticheError", "StyleTransfer", "VGG19", "__version__", "load_image",
           "run", "save_image", "transfer", "vgg19"]
