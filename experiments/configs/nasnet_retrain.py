r"""Retrain a NASNet architecture from scratch (Zoph et al. 2018, Sec. 4.1):
NASNet-A by name, or any architecture of the ``nasnet`` space.

  python experiments/main.py \
    --config=experiments/configs/nasnet_retrain.py:tiny --workdir=runs/nasnet

``--config.arch`` takes ``nasnet_a`` (the published cells, wired as the
released model) or the one-line text of a ``nasnet`` architecture
(``best.json``'s ``text``; set ``--config.space_kwargs.num_blocks`` to its
``B``). The network is "N @ F": ``network.num_cells`` = N normal cells per
stage and ``network.penultimate_filters`` = F, the width of the last cell's
output (NASNet-A 6 @ 768 has 32 filters per block in the first stage,
3.3M parameters). ``--config.network.penultimate_filters=0`` sizes by
``network.channels`` instead.

Variants:

* ``paper``: CIFAR-10, NASNet-A 6 @ 768 with the released recipe (TF-slim
  ``nasnet.py`` ``cifar_config``): ScheduledDropPath to 0.4
  (``drop_path_keep_prob`` 0.6), auxiliary head (loss weight 0.4),
  937,500 steps at batch 32 (600 epochs), cutout 16 (the 2.65 % row).
  The learning rate (0.025, one cosine cycle), momentum 0.9, L2 5e-4 and
  gradient clipping at 5 are our choices: the paper does not list them.
* ``cpu``: Fashion-MNIST (``../shared/data``), NASNet-A 1 @ 96, 3 epochs on
  8,000 images: minutes on a CPU.
* ``tiny``: the embedded 8x8 digits, NASNet-A 1 @ 24 with one reduction,
  one epoch: seconds (CI).
"""

import ml_collections

VARIANTS = ("paper", "cpu", "tiny")


def get_config(variant: str = "paper") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.run = "retrain"
  c.seed = 0
  c.space = "nasnet"
  c.space_kwargs = {"num_blocks": 5}
  c.arch = "nasnet_a"
  c.keep = 3
  c.eval_batch_size = 500
  c.data = dict(name="cifar10", data_dir="", num_val=5000, max_train=0,
                split_seed=0, augment="cifar", cutout=16)
  c.network = dict(num_cells=6, penultimate_filters=768, channels=32,
                   num_reductions=2, stem="cifar", stem_multiplier=3,
                   aux_head=True, dropout=0.0)
  c.train = dict(epochs=600, batch_size=32, lr_max=0.025, lr_min=0.0,
                 lr_t0=600.0, lr_t_mul=1.0, momentum=0.9, weight_decay=5e-4,
                 grad_clip=5.0, drop_path=0.4, aux_weight=0.4)
  if variant == "cpu":
    c.data = dict(name="fashion_mnist", data_dir="", num_val=2000,
                  max_train=8000, split_seed=0, augment="", cutout=0)
    c.network.num_cells = 1
    c.network.penultimate_filters = 96  # 4 filters per block at first
    c.train.epochs = 3
    c.train.batch_size = 64
    c.train.lr_max = 0.05
    c.train.lr_t0 = 3.0
    c.train.drop_path = 0.1
  elif variant == "tiny":
    c.data = dict(name="digits", data_dir="", num_val=128, max_train=128,
                  split_seed=0, augment="", cutout=0)
    c.network.num_cells = 1
    c.network.num_reductions = 1
    c.network.penultimate_filters = 24  # 2 filters per block at first
    c.network.stem_multiplier = 1
    c.train.epochs = 1
    c.train.batch_size = 32
    c.train.lr_t0 = 1.0
    c.train.drop_path = 0.2
  return c
