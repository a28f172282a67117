r"""ENAS micro (cell) search (Pham et al., ICML 2018, Sec. 2.4 and 3.2): one
shared-weight supernet, the controller trained by REINFORCE on validation
minibatch accuracy, then derive the best of 100 sampled cells.

  python experiments/main.py \
    --config=experiments/configs/enas_micro.py:tiny --workdir=runs/enas_micro

Variants:

* ``paper``: CIFAR-10 (tfds ``cifar10``) with the authors' settings,
  ``scripts/cifar10_micro_search.sh`` of github.com/melodyguan/enas: 150
  epochs, batch 160, 2 normal cells per stage (``--child_num_layers=6``),
  20 channels, B = 5, SGDR cosine 0.05 -> 0.0005 (T_0 = 10, T_mul = 2),
  L2 1e-4, gradient norm 5; controller Adam 0.0035, 30 steps per epoch of
  10 aggregated samples, tanh constant 1.10 with op_tanh_reduce 2.5, no
  temperature, entropy 1e-4 added to the reward, baseline decay 0.99.
* ``fashion_mnist``: a CPU-sized search on Fashion-MNIST
  (``../shared/data/tfds``): 8,000 train images, 12 channels, 10 epochs.
* ``tiny``: the embedded scikit-learn digits, seconds on a CPU (CI).
"""

import ml_collections

VARIANTS = ("paper", "fashion_mnist", "tiny")


def get_config(variant: str = "paper") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.run = "enas"
  c.seed = 0
  c.space = "enas_micro"
  c.space_kwargs = {"num_nodes": 5}       # B = 5 (Sec. 3.2)
  c.algorithm = "reinforce"               # "random": same loop, no learning
  c.num_epochs = 150                      # --num_epochs=150
  c.controller_steps = 30                 # --controller_train_steps=30
  c.val_batch_size = 160                  # the reward minibatch (= batch)
  c.derive_samples = 100                  # Sec. 2.2, deriving
  c.parallel = "none"                     # "data" | "per_device"
  c.keep = 3                              # checkpoints kept
  c.data = dict(name="cifar10", data_dir="", num_val=5000, max_train=0,
                split_seed=0, augment="cifar", cutout=0)
  c.network = dict(num_cells=2, channels=20, num_reductions=2,
                   stem_multiplier=3)
  c.shared = dict(batch_size=160, lr_max=0.05, lr_min=0.0005, lr_t0=10.0,
                  lr_t_mul=2.0, momentum=0.9, weight_decay=1e-4,
                  grad_clip=5.0)
  # The authors' controller (micro_controller.py; --controller_* flags).
  # Op order here: identity, sep 3x3, sep 5x5, avg pool, max pool (the
  # authors': sep 3x3, sep 5x5, avg, max, identity), so their b_soft init
  # [10, 10, 0, 0, 0] and b_soft_no_learn [.25, .25, -.25, -.25, -.25]
  # (normal cell only) read as below.
  c.controller = dict(
      hidden_size=64, num_layers=1, temperature=1.0, tanh_constant=1.10,
      op_tanh_reduce=2.5, op_bias_init=(0.0, 10.0, 10.0, 0.0, 0.0),
      op_bias_fixed=(-0.25, 0.25, 0.25, -0.25, -0.25),
      op_bias_fixed_prefix="normal/", enas_anchors=True,
      node_anchor_step=True)
  # num_aggregate=10 samples per update, bl_dec=0.99, Adam lr 0.0035,
  # entropy weight 1e-4 added to the reward.
  c.reinforce = dict(batch_size=10, learning_rate=0.0035,
                     baseline_decay=0.99, entropy_weight=1e-4,
                     entropy_in_reward=True)
  c.random = dict(batch_size=10)
  if variant == "fashion_mnist":
    c.data = dict(name="fashion_mnist", data_dir="", num_val=2000,
                  max_train=8000, split_seed=0, augment="", cutout=0)
    c.num_epochs = 10
    c.network.channels = 12
    c.shared.batch_size = 64
    c.val_batch_size = 128
    c.shared.lr_t0 = 10.0
    c.controller_steps = 20
  elif variant == "tiny":
    c.space_kwargs = {"num_nodes": 1}
    c.data = dict(name="digits", data_dir="", num_val=128, max_train=128,
                  split_seed=0, augment="", cutout=0)
    c.num_epochs = 2
    c.controller_steps = 2
    c.val_batch_size = 32
    c.derive_samples = 8
    c.network = dict(num_cells=1, channels=4, num_reductions=1,
                     stem_multiplier=1)
    c.shared.batch_size = 32
    c.controller.hidden_size = 16
    c.reinforce.batch_size = 2
  return c
