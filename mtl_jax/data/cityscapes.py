"""CityScapes (Cordts et al. 2016) in the MTAN layout: 7-class segmentation and depth.

2,975 training and 500 test images at 128×256, as pre-processed by Liu et al. (MTAN)
and used by CAGrad, Nash-MTL and FAMO: `segmentation` over 7 classes (`label_7/`, or
`label/` in copies that renamed it; −1 = unlabelled) and `depth`, which is inverse depth
(disparity; 0 = missing). Read from a local directory (see `mtl_jax.data.mtan`); nothing
is downloaded. Training batches get the standard rescale-crop and flip (`AUGMENT`).
"""

from __future__ import annotations

import functools

from mtl_jax.data import augment, mtan
from mtl_jax.tasks import Depth, Segmentation, Task

HEIGHT, WIDTH = 128, 256
NUM_CLASSES = 7

LAYOUT = mtan.Layout(
    dataset="cityscapes",
    height=HEIGHT,
    width=WIDTH,
    features={
        "segmentation": (("label_7", "label"), augment.LABEL),
        "depth": (("depth",), augment.DEPTH),
    },
    how_to_get=(
        "download MTAN's pre-processed CityScapes, the 128x256 version (linked from "
        "https://github.com/lorenmt/mtan: "
        "https://www.dropbox.com/s/lg2ktu7o8hzwf99/cityscapes2.zip), and unzip it so that "
        "{root}/train/image/0.npy exists, or set dataset.data_dir to the directory that "
        "holds train/ and val/"
    ),
)

load = functools.partial(mtan.load, LAYOUT)
AUGMENT = augment.make_augment(LAYOUT.kinds)


def tasks() -> dict[str, Task]:
    """The tasks CityScapes supports, keyed by name (= feature name)."""
    return {
        "segmentation": Segmentation("segmentation", NUM_CLASSES, height=HEIGHT, width=WIDTH),
        "depth": Depth("depth", height=HEIGHT, width=WIDTH),
    }
