"""The seed project's example: shared conv trunk, classification + boundary detection.

`seed_cnn` (conv 3→16, conv 16→32, 3×3, ReLU and 2×2 max-pool each) on `shapes`
(32×32 RGB); the `shape` head is fc 128 → 10 classes, the `boundary` head a per-pixel
map; Adam on the weighted sum of cross-entropy and class-balanced BCE.

    python -m experiments.main --config experiments/configs/seed_example.py --workdir runs/seed

Expected on 2 CPU cores (about a minute of training): `shape/accuracy` well above the
10% of chance and `boundary/ods_f` well above the F1 of a constant predictor.
"""

from experiments.configs import base


def get_config():
    config = base.get_config()
    config.dataset.name = "shapes"
    config.dataset.config = "default"
    config.tasks = "shape,boundary"
    config.model.trunk = "seed_cnn"
    config.model.head_hidden = (128,)
    config.model.dense_head_hidden = 32
    config.batch_size = 128
    config.eval_batch_size = 500
    config.num_steps = 1500
    config.log_every_steps = 100
    return config
