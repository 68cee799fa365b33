"""Three dense tasks on the offline `shapes` data: the NYUv2 task kinds, on a CPU budget.

Semantic segmentation, a depth-like distance map and a normals-like gradient map, all
per-pixel, from one `small_resnet` trunk (the W2 encoder; 32×32 RGB → [8, 8, 128]) with
a conv head per task upsampled bilinearly to 32×32. (A two-conv trunk does not learn the
segmentation in this budget: its receptive field is too small to tell the shapes apart.)
Metrics are NYUv2's: `segmentation/{miou, pixel_accuracy}`, `depth/{abs_err, rel_err}`,
`normal/{mean_angle, median_angle, within_11.25, within_22.5, within_30}`; evaluated
every 100 steps so that a summary can average the last evaluations, as the NYUv2
protocol averages the last 10 epochs.

    python -m experiments.main --config experiments/configs/shapes_dense.py --workdir runs/dense
    python -m experiments.sweep --config experiments/configs/shapes_dense.py \
        --workdir runs/dense-sweep --methods equal,mgda,uncertainty --seeds 0,1 --stl

Needs about 2 minutes per run on 2 CPU cores after a one-off 30 s data build; see the
README's "Benchmarks" section for measured results and the constant-predictor floor.
"""

from experiments.configs import base


def get_config():
    config = base.get_config()
    config.dataset.name = "shapes"
    config.dataset.config = "default"
    config.tasks = "segmentation,depth,normal"
    config.model.trunk = "small_resnet"
    config.model.dense_head_hidden = 64
    config.optimizer.learning_rate = 2e-3
    config.optimizer.warmup_steps = 50
    config.batch_size = 32
    config.eval_batch_size = 500
    config.num_steps = 500
    config.log_every_steps = 20
    config.eval_every_steps = 100
    return config
