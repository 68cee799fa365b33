"""CelebA, 40 binary attributes, with the 9-layer CNN of the FAMO CelebA setup.

Forty tasks (one per attribute, TFDS names) on 64×64 images; the shared CNN (5,176,640
parameters) and a linear head per attribute (5,197,160 in all). Adam 3e-4, 15 epochs of
batch 256 (162,770 training images: 635 steps per epoch), as FAMO's
`experiments/celeba/trainer.py`; FAMO's own run there uses `gamma` (its logits' weight
decay) 0.01: `--config.weighting.kwargs.weight_decay=0.01`. The metric is each
attribute's F1; the protocol reports the test F1 of the epoch with the best mean
validation F1: every epoch evaluates `test` and `validation`, and the summary selects
with `--select-by f1`.

Data: TFDS `celeb_a` prepared as array_record in `data_dir` (`tfds build celeb_a`
where it can be downloaded); images are resized once to 64×64 and cached.

    python -m experiments.main --config experiments/configs/celeba_cnn.py \
        --workdir runs/celeba-famo --config.weighting.name=famo \
        --config.weighting.kwargs.weight_decay=0.01

Expected Δm% (published, against single-task F1): LS 4.15, UW 3.23, MGDA 14.85, PCGrad
3.17, CAGrad 2.48, IMTL-G 0.84, Nash-MTL 2.84, FAMO 1.21, FairGrad 0.37. Hardware: one
GPU, about 9,500 steps; gradient methods in parameter mode need 40 trunk backwards per
step (prefer `--config.weighting.rep_grad=true` or loss methods on small hardware).
"""

from experiments.configs import base
from mtl_jax.data.celeb_a import ATTRIBUTES

TRAIN_IMAGES = 162_770
BATCH_SIZE = 256
EPOCHS = 15


def get_config():
    config = base.get_config()
    steps_per_epoch = TRAIN_IMAGES // BATCH_SIZE
    config.dataset.name = "celeb_a"
    config.tasks = ",".join(ATTRIBUTES)
    config.model.trunk = "celeba_cnn"
    config.model.head_hidden = ()
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 3e-4
    config.optimizer.schedule = "constant"
    config.batch_size = BATCH_SIZE
    config.eval_batch_size = 512
    config.num_steps = EPOCHS * steps_per_epoch
    config.eval_every_steps = steps_per_epoch
    config.select_split = "validation"
    config.checkpoint_every_steps = steps_per_epoch
    config.log_every_steps = 50
    return config
