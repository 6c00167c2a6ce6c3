"""Tests for pastiche.calibrate's GPTQ rounding (the calibrated compressions themselves run
through pastiche-compress in test_compress.py)."""

import numpy as np
import torch

from pastiche.calibrate import _gptq


def test_gptq_rounds_to_the_codebook_and_beats_nearest_rounding():
    rng = np.random.default_rng(0)
    n, m = 40, 24
    x = rng.standard_normal((500, n)) @ rng.standard_normal((n, n)) * 0.3  # correlated inputs
    hessian = torch.from_numpy(x.T @ x + 1e-3 * np.eye(n))
    target = torch.from_numpy(rng.standard_normal((m, n)))
    codebook = torch.tensor([-1.5, -0.5, 0.0, 0.7, 1.6], dtype=torch.float64)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)
    free = torch.zeros(n, dtype=torch.bool)
    index = _gptq(target.T.contiguous(), hinv, codebook, free).T
    nearest = torch.argmin((target[..., None] - codebook).abs(), -1)

    def loss(idx):
        e = codebook[idx] - target
        return float(((e @ hessian) * e).sum())

    assert index.shape == (m, n) and int(index.min()) >= 0 and int(index.max()) < codebook.numel()
    assert loss(index) < 0.8 * loss(nearest)
    # with an identity Hessian there is nothing to compensate: GPTQ is nearest rounding
    eye = torch.eye(n, dtype=torch.float64)
    assert torch.equal(_gptq(target.T.contiguous(), eye, codebook, free).T, nearest)
    # a free column is never rounded and takes no index
    free[-1] = True
    assert torch.all(_gptq(target.T.contiguous(), hinv, codebook, free)[-1] == 0)
