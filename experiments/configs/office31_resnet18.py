"""Office-31 in LibMTL's protocol: ImageNet-pretrained ResNet-18 + a shared 512→512 layer,
one linear head per domain (`amazon`, `dslr`, `webcam`; multi-input, 31 classes each).

    python -m experiments.main --config experiments/configs/office31_resnet18.py \\
        --workdir runs/office31 --config.dataset.data_dir=DATA \\
        --config.model.init_from=resnet18-f37072fd.npz

Data: `DATA/office-31/<domain>/images/<class>/*.jpg` (a missing folder says how to get
it); `dataset.config` "seeded" (default: per class ⌊3n/5⌋ / ⌊n/5⌋ / rest, seed 0) or
"libmtl_lists" (LibMTL's `examples/office/data_txt/office-31/*.txt` copied to
`DATA/office-31/data_txt/`). Images resized to 224×224 with ImageNet normalisation, no
augmentation (`mtl_jax.data.office`).

Weights: the torchvision ResNet-18 ImageNet state dict, converted once without torch at
training time: `python -m mtl_jax.models.convert_weights resnet18-f37072fd.pth
resnet18-f37072fd.npz` (a `.pth` is also read directly when torch is installed). Without
`model.init_from` the run trains from scratch, which is not the protocol.

Protocol, as LibMTL's `examples/office/main.py` and `LibMTL/config.py` at commit 4336804:
the encoder is torchvision's ResNet-18 (undilated), global average pool, Linear(512, 512)
(weights N(0, 0.005), bias 0.1) → BatchNorm1d → ReLU → Dropout(0.5) (`ResNetEncoder`,
trunk `resnet18_encoder`); each domain's head is one Linear(512, 31); batch 64 per domain;
Adam, learning rate 1e-4 constant, weight decay 1e-5 added to the gradient
(torch.optim.Adam's `weight_decay`); 100 epochs, an epoch being the largest domain's
batches: LibMTL's lists give amazon 1,680 training images, ⌊1680/64⌋ = 26 steps per epoch
(drop_last), so 2,600 steps; validation and test evaluated every epoch, the model chosen on
the mean validation accuracy (`sweep --select-by accuracy`); metric: test accuracy per
domain and their mean. BatchNorm statistics are shared by the domains (`model.input_bn`
"shared", as LibMTL's single encoder).

Published numbers: LibMTL's repository (README, `docs/docs/user_guide/benchmark/office.md`,
`examples/office/README.md` at 4336804) states the protocol but ships no result table, so
none is quoted here. Hardware: not run here (no data on this machine); one training step
is tested on generated JPEG trees (`tests/test_office_experiment.py`).
"""

from experiments.configs import base

STEPS_PER_EPOCH = 26  # ⌊1680 / 64⌋: amazon, the largest domain of LibMTL's split lists
EPOCHS = 100


def set_epochs(config, steps_per_epoch: int) -> None:
    """`EPOCHS` epochs of `steps_per_epoch` steps, logged and evaluated every epoch,
    checkpointed every 10."""
    config.num_steps = EPOCHS * steps_per_epoch
    config.log_every_steps = steps_per_epoch
    config.eval_every_steps = steps_per_epoch
    config.checkpoint_every_steps = 10 * steps_per_epoch


def get_config():
    config = base.get_config()
    config.dataset.name = "office_31"
    config.dataset.config = "seeded"
    config.tasks = "amazon,dslr,webcam"
    config.model.trunk = "resnet18_encoder"
    config.model.head_hidden = ()  # one Linear(512, classes) per domain
    config.batch_size = 64
    config.eval_batch_size = 64
    set_epochs(config, STEPS_PER_EPOCH)
    config.select_split = "val"
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-4
    config.optimizer.schedule = "constant"
    config.optimizer.weight_decay = 1e-5
    return config
