"""NYUv2 with SegNet-MTAN: the protocol of Liu et al. (CVPR 2019) used by every NYUv2 table.

Three tasks on 288×384 images: 13-class `segmentation`, `depth`, surface `normal`.
SegNet-MTAN (44,229,073 parameters), Adam 1e-4 halved after epoch 100, 200 epochs of
batch 2 (795 training images: 397 steps per epoch), MTAN's augmentation (random
rescale-crop by {1.0, 1.2, 1.5} with depth divided by the scale, horizontal flip with the
x-normal negated), evaluation on the 654 test images after every epoch; the reported
metrics are the mean of the last 10 evaluations (`--last-evals 10` in the summary).

Data: the MTAN-preprocessed `.npy` layout in `<data_dir>/nyuv2` (see `mtl_jax.data.nyuv2`
for where to download it); nothing can be downloaded here.

    python -m experiments.main --config experiments/configs/nyuv2_segnet_mtan.py \
        --workdir runs/nyuv2-famo --config.dataset.data_dir=/data \
        --config.weighting.name=famo
    python -m experiments.sweep --config experiments/configs/nyuv2_segnet_mtan.py \
        --workdir runs/nyuv2 --methods equal,uncertainty,mgda,pcgrad,cagrad,nash_mtl,famo \
        --seeds 0,1,2 --baseline nyuv2 --last-evals 10 \
        --pareto segmentation/miou,normal/mean_angle

Expected Δm% against the shipped single-task baseline (published, 3 seeds):
LS 5.59, UW 4.05, MGDA 1.38, PCGrad 3.97, CAGrad 0.20, IMTL-G −0.76, Nash-MTL −4.04,
FAMO −4.10, FairGrad −4.66, DB-MTL −5.36. Hardware: one modern GPU, about 79,400 steps
(several hours per run for loss methods; gradient methods in parameter mode cost ~3
backwards per step). Not runnable on the 2-core CPU in reasonable time. Checkpoints every
epoch; rerunning the command resumes.
"""

from experiments.configs import base


def mtan_protocol(
    config, *, train_images: int, batch_size: int, epochs: int = 200, eval_batch_size: int
):
    """The MTAN protocol's optimisation and evaluation schedule, shared with Cityscapes:
    SegNet-MTAN, Adam 1e-4 halved after epoch 100, `epochs` epochs of `batch_size`,
    evaluation and a checkpoint after every epoch."""
    steps_per_epoch = train_images // batch_size
    config.model.trunk = "segnet"
    config.model.architecture = "mtan"
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-4
    config.optimizer.schedule = "step"
    config.optimizer.decay_every_steps = (epochs // 2) * steps_per_epoch
    config.optimizer.decay_factor = 0.5
    config.batch_size = batch_size
    config.eval_batch_size = eval_batch_size
    config.num_steps = epochs * steps_per_epoch
    config.eval_every_steps = steps_per_epoch
    config.checkpoint_every_steps = steps_per_epoch
    config.log_every_steps = 50
    return config


def get_config():
    config = base.get_config()
    config.dataset.name = "nyuv2"
    config.tasks = "segmentation,depth,normal"
    return mtan_protocol(config, train_images=795, batch_size=2, eval_batch_size=8)
