r"""ENAS macro (whole network) search (Pham et al., ICML 2018, Sec. 2.3 and
3.2): every layer picks one of six ops and its skip connections.

  python experiments/main.py \
    --config=experiments/configs/enas_macro.py:tiny --workdir=runs/enas_macro

Variants:

* ``paper``: CIFAR-10 (tfds ``cifar10``) with the authors' settings,
  ``scripts/cifar10_macro_search.sh`` of github.com/melodyguan/enas: 310
  epochs, batch 128, 12 layers, 36 channels, SGDR cosine 0.05 -> 0.0005,
  L2 2.5e-4, gradient norm 5; controller Adam 0.001, 50 steps per epoch of
  20 aggregated samples, tanh constant 1.5, skip target 0.4 with KL weight
  0.8, entropy 1e-4 added to the reward, baseline decay 0.99.
* ``fashion_mnist``: CPU-sized, Fashion-MNIST (``../shared/data/tfds``).
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
  c.space = "enas_macro"
  c.space_kwargs = {"num_layers": 12}     # --child_num_layers=12
  c.algorithm = "reinforce"
  c.num_epochs = 310                      # --num_epochs=310
  c.controller_steps = 50                 # --controller_train_steps=50
  c.val_batch_size = 128
  c.derive_samples = 100
  c.parallel = "none"
  c.keep = 3
  c.data = dict(name="cifar10", data_dir="", num_val=5000, max_train=0,
                split_seed=0, augment="cifar", cutout=0)
  c.network = dict(channels=36, grow_channels=False)
  c.shared = dict(batch_size=128, lr_max=0.05, lr_min=0.0005, lr_t0=10.0,
                  lr_t_mul=2.0, momentum=0.9, weight_decay=2.5e-4,
                  grad_clip=5.0)
  # The authors' general_controller.py (--controller_* flags).
  c.controller = dict(
      hidden_size=64, num_layers=1, temperature=1.0, tanh_constant=1.5,
      enas_skips=True, skip_target=0.4, skip_weight=0.8)
  c.reinforce = dict(batch_size=20, learning_rate=0.001,
                     baseline_decay=0.99, entropy_weight=1e-4,
                     entropy_in_reward=True)
  c.random = dict(batch_size=20)
  if variant == "fashion_mnist":
    c.data = dict(name="fashion_mnist", data_dir="", num_val=2000,
                  max_train=8000, split_seed=0, augment="", cutout=0)
    c.space_kwargs = {"num_layers": 6}
    c.num_epochs = 10
    c.network.channels = 16
    c.shared.batch_size = 64
    c.controller_steps = 20
  elif variant == "tiny":
    c.space_kwargs = {"num_layers": 3}
    c.data = dict(name="digits", data_dir="", num_val=128, max_train=128,
                  split_seed=0, augment="", cutout=0)
    c.num_epochs = 2
    c.controller_steps = 2
    c.val_batch_size = 32
    c.derive_samples = 8
    c.network = dict(channels=4, grow_channels=False)
    c.shared.batch_size = 32
    c.controller.hidden_size = 16
    c.reinforce.batch_size = 2
  return c
