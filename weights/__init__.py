"""Data package: the bundled quantized VGG19 weights (see README.md here)."""
