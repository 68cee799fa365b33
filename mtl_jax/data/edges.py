"""Boundary maps from binary masks."""

from __future__ import annotations

import numpy as np


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """Edge map [N, H, W] in {0, 1}: mask pixels that have a 4-neighbour outside the mask.

    Pixels beyond the image border count as outside.
    """
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)), constant_values=False)
    interior = (
        padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    )
    return (mask & ~interior).astype(np.uint8)
