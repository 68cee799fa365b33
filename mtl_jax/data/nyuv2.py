"""NYUv2 (Silberman et al. 2012) in the MTAN layout: 13-class segmentation, depth, normals.

795 training and 654 test images at 288×384, as pre-processed by Liu et al. (MTAN, CVPR
2019) and used by CAGrad, Nash-MTL, FAMO and LibMTL. Read from a local directory (see
`mtl_jax.data.mtan` for the on-disk format); nothing is downloaded. Tasks:
`segmentation` (13 classes, −1 = unlabelled), `depth` (0 = missing) and `normal`
(all-zero = missing). Training batches get the standard rescale-crop and flip
(`AUGMENT`).
"""

from __future__ import annotations

import functools

from mtl_jax.data import augment, mtan
from mtl_jax.tasks import Depth, Segmentation, SurfaceNormal, Task

HEIGHT, WIDTH = 288, 384
NUM_CLASSES = 13

LAYOUT = mtan.Layout(
    dataset="nyuv2",
    height=HEIGHT,
    width=WIDTH,
    features={
        "segmentation": (("label",), augment.LABEL),
        "depth": (("depth",), augment.DEPTH),
        "normal": (("normal",), augment.NORMAL),
    },
    how_to_get=(
        "download MTAN's pre-processed NYUv2 (288x384, linked from "
        "https://github.com/lorenmt/mtan: https://www.dropbox.com/s/p2nn02wijg7peiy/nyuv2.zip) "
        "and unzip it so that {root}/train/image/0.npy exists, or set dataset.data_dir to "
        "the directory that holds train/ and val/"
    ),
)

load = functools.partial(mtan.load, LAYOUT)
AUGMENT = augment.make_augment(LAYOUT.kinds)


def tasks() -> dict[str, Task]:
    """The tasks NYUv2 supports, keyed by name (= feature name)."""
    return {
        "segmentation": Segmentation("segmentation", NUM_CLASSES, height=HEIGHT, width=WIDTH),
        "depth": Depth("depth", height=HEIGHT, width=WIDTH),
        "normal": SurfaceNormal("normal", height=HEIGHT, width=WIDTH),
    }
