"""Cityscapes with SegNet-MTAN: the MTAN protocol used by the Nash-MTL and FAMO tables.

Two tasks on 128×256 images: 7-class `segmentation` and `depth`. SegNet-MTAN, Adam 1e-4
halved after epoch 100, 200 epochs of batch 8 (2,975 training images: 371 steps per
epoch), evaluation on the 500 validation images after every epoch; the reported metrics
are the mean of the last 10 evaluations.

Data: the MTAN-preprocessed `.npy` layout in `<data_dir>/cityscapes` (see
`mtl_jax.data.cityscapes`).

    python -m experiments.sweep --config experiments/configs/cityscapes_segnet_mtan.py \
        --workdir runs/cityscapes --methods equal,uncertainty,mgda,nash_mtl,famo \
        --seeds 0,1,2 --baseline cityscapes --last-evals 10 \
        --pareto segmentation/miou,depth/abs_err

Expected Δm% (published, 3 seeds): LS 22.60, UW 5.89, MGDA 44.14, PCGrad 18.29, CAGrad
11.64, IMTL-G 11.10, Nash-MTL 6.82, FAMO 8.13, FairGrad 5.18. Hardware: one GPU, about
74,200 steps; not runnable on the 2-core CPU in reasonable time.
"""

from experiments.configs import base
from experiments.configs.nyuv2_segnet_mtan import mtan_protocol


def get_config():
    config = base.get_config()
    config.dataset.name = "cityscapes"
    config.tasks = "segmentation,depth"
    return mtan_protocol(config, train_images=2975, batch_size=8, eval_batch_size=40)
