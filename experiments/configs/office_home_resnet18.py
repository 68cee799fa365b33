"""Office-Home in LibMTL's protocol: as `office31_resnet18` (ImageNet-pretrained ResNet-18
+ a shared 512→512 layer, Adam 1e-4 with weight decay 1e-5, batch 64 per domain, 100
epochs, model chosen on validation), with the four domains `Art`, `Clipart`, `Product`,
`Real_World` (65 classes each).

    python -m experiments.main --config experiments/configs/office_home_resnet18.py \\
        --workdir runs/office_home --config.dataset.data_dir=DATA \\
        --config.model.init_from=resnet18-f37072fd.npz

Data: `DATA/office-home/<domain>/<class>/*.jpg` (the official zip's `Real World` folder is
found too); "libmtl_lists" reads `DATA/office-home/data_txt/`. An epoch is the largest
domain's batches: LibMTL's lists give Product 2,635 training images, ⌊2635/64⌋ = 41
steps, so 4,100 steps. Published numbers: none in LibMTL's repository (see
`office31_resnet18`); not run here (no data).
"""

from experiments.configs import office31_resnet18

STEPS_PER_EPOCH = 41  # ⌊2635 / 64⌋: Product, the largest domain of LibMTL's split lists


def get_config():
    config = office31_resnet18.get_config()
    config.dataset.name = "office_home"
    config.tasks = "Art,Clipart,Product,Real_World"
    office31_resnet18.set_epochs(config, STEPS_PER_EPOCH)
    return config
