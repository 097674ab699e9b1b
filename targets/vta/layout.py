"""Blocked data layouts of VTA tensors (spec section 4) and their inverses.

Channels are zero-padded up to the block size and the batch up to BATCH, so a compiler can
pack any int8 NCHW tensor; unpacking takes the original sizes back.
"""

from __future__ import annotations

import numpy as np

from hwcompile.errors import VTAError

from .config import VTAConfig


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _pad_axis(x: np.ndarray, axis: int, multiple: int) -> np.ndarray:
    extra = _ceil(x.shape[axis], multiple) * multiple - x.shape[axis]
    if not extra:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return np.pad(x, widths)


def _check_ndim(x: np.ndarray, ndim: int, what: str) -> None:
    if x.ndim != ndim:
        raise VTAError(f"{what} must have {ndim} dimensions, got shape {x.shape}")


def pack_activations(x: np.ndarray, cfg: VTAConfig) -> np.ndarray:
    """NCHW -> (N/B, C/16, H, W, B, 16) ("NCHW1n16c"); one INP element is [B, 16]."""
    _check_ndim(x, 4, "activations (NCHW)")
    x = _pad_axis(_pad_axis(x, 0, cfg.batch), 1, cfg.block_in)
    n, c, h, w = x.shape
    blocked = x.reshape(n // cfg.batch, cfg.batch, c // cfg.block_in, cfg.block_in, h, w)
    return np.ascontiguousarray(blocked.transpose(0, 2, 4, 5, 1, 3))


def unpack_activations(y: np.ndarray, n: int, c: int) -> np.ndarray:
    """Inverse of :func:`pack_activations`, cropped to ``n`` images and ``c`` channels."""
    _check_ndim(y, 6, "packed activations")
    nb, cb, h, w, b, blk = y.shape
    return y.transpose(0, 4, 1, 5, 2, 3).reshape(nb * b, cb * blk, h, w)[:n, :c]


def pack_conv_weights(w: np.ndarray, cfg: VTAConfig) -> np.ndarray:
    """OIHW -> (O/16, I/16, kh, kw, 16o, 16i); one WGT element is [16o, 16i]."""
    _check_ndim(w, 4, "conv weights (OIHW)")
    w = _pad_axis(_pad_axis(w, 0, cfg.block_out), 1, cfg.block_in)
    o, i, kh, kw = w.shape
    blocked = w.reshape(o // cfg.block_out, cfg.block_out, i // cfg.block_in, cfg.block_in,
                        kh, kw)
    return np.ascontiguousarray(blocked.transpose(0, 2, 4, 5, 1, 3))


def pack_dense_weights(w: np.ndarray, cfg: VTAConfig) -> np.ndarray:
    """(O, I) -> (O/16, I/16, 16o, 16i)."""
    _check_ndim(w, 2, "dense weights (O, I)")
    return pack_conv_weights(w[:, :, None, None], cfg)[:, :, 0, 0]


def pack_matrix(a: np.ndarray, cfg: VTAConfig) -> np.ndarray:
    """(M, K) activations of a dense/GEMM -> (M/B, K/16, B, 16)."""
    _check_ndim(a, 2, "matrix (M, K)")
    return pack_activations(a[:, :, None, None], cfg)[:, :, 0, 0]


def unpack_matrix(y: np.ndarray, m: int, n: int) -> np.ndarray:
    """(M/B, N/16, B, 16) -> (M, N), cropped."""
    _check_ndim(y, 4, "packed matrix")
    return unpack_activations(y[:, :, None, None], m, n)[:, :, 0, 0]


def pack_bias(bias: np.ndarray, cfg: VTAConfig) -> np.ndarray:
    """Per-channel int32 bias (C,) -> (C/16, B, 16) ACC elements, replicated over the batch."""
    _check_ndim(bias, 1, "bias (C,)")
    b = _pad_axis(bias.astype(np.int32), 0, cfg.block_out).reshape(-1, 1, cfg.block_out)
    return np.ascontiguousarray(np.broadcast_to(b, (b.shape[0], cfg.batch, cfg.block_out)))
