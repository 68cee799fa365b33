"""Tiny MultiMNIST run for the end-to-end test (a few seconds of training).

    python -m experiments.main --config experiments/configs/test.py --workdir /tmp/mtl_test

Uses the `tiny` build (2,048 train / 512 test pairs); accuracy is not meaningful.
Batch size 64 is divisible by 8 (for 8-device data parallelism); every step is logged to
`metrics.jsonl` (losses and weights as exact floats) and a checkpoint is written every 5
steps, so rerunning the same command in the same workdir resumes (and, after a kill,
reproduces the uninterrupted run bit for bit).
"""

from experiments.configs import base


def get_config():
    config = base.get_config()
    config.dataset.config = "tiny"
    config.batch_size = 64
    config.eval_batch_size = 256
    config.num_steps = 30
    config.log_every_steps = 1
    config.checkpoint_every_steps = 5
    return config
