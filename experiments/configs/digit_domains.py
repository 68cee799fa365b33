"""Digit domains: multi-input MTL, one 10-way digit task per domain (`colour`,
`inverted`, `plain`), each with its own images (`mtl_jax.data.digit_domains`: 500 /
1,000 / 2,000 train images, 100 val and 300 test per domain; offline).

    python -m experiments.main --config experiments/configs/digit_domains.py --workdir runs/dd

The LeNet trunk is shared by the three domains and runs once per domain's batch inside
the step; each domain has its own MLP head. Batch 64 per domain, Adam 1e-3, 1,500 steps
(48 epochs of `plain`, 192 passes over `colour`); the evaluation on `val` is recorded
beside `test` (`select_split`). Single-domain baselines: `--config.tasks=plain` etc.
"""

from experiments.configs import base


def get_config():
    config = base.get_config()
    config.dataset.name = "digit_domains"
    config.tasks = "colour,inverted,plain"
    config.batch_size = 64
    config.eval_batch_size = 100
    config.num_steps = 1500
    config.log_every_steps = 100
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.select_split = "val"
    config.optimizer.learning_rate = 1e-3
    return config
