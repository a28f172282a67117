r"""NAS-RL (Zoph & Le, ICLR 2017): a REINFORCE controller proposes layered
CNNs with learned skip connections, each child trained from scratch, many at
once (one per device) with synchronous controller replicas.

  python experiments/main.py \
    --config=experiments/configs/nasrl_cifar.py:cpu --workdir=runs/nasrl_cpu

Variants:

* ``paper``: CIFAR-10 at the paper's settings (Sec. 4.1 and 3.3): a 2-layer
  LSTM controller of 35 units trained with Adam at 6e-4, children of 15
  layers with skip connections trained 50 epochs with Nesterov momentum
  (learning rate 0.1, weight decay 1e-4), 5,000 validation images, rounds of
  m * K = 8 * 100 = 800 children (the paper's 100 replicas of 8 children)
  for 12,800 children. Needs a device count that divides 800 (8, 16, 32,
  100, ...; ``launch/multi_gpu.sh``, ``launch/tpu_pod.sh``). The paper
  deepened the children during the search (6 layers, +2 every 1,600
  children); a space has one depth, so this runs the final depth.
* ``cpu``: Fashion-MNIST (from ``../shared/data``) on this CPU, 3 layers
  with strides (3^3 = 27 <= 28 pixels), 10 rounds of 8 children.
* ``tiny``: the embedded 8x8 digits, 2 controller updates of 2 children, 1
  epoch each: seconds (tests run it with ``--config.reinforce.batch_size=8``
  on 8 fake devices, one child each).
* ``random``: the ``cpu`` search with random search instead of REINFORCE.

``--config.per_device_children=False`` trains the children one after
another on one device (same rewards, tested).
"""

import ml_collections

VARIANTS = ("paper", "cpu", "tiny", "random")


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.run = "train"
  c.seed = 0
  c.space = "nasrl"
  c.algorithm = "random" if variant == "random" else "reinforce"
  c.data_parallel = False
  c.per_device_children = True  # one child per device, replicas in sync
  c.checkpoint_every = 1
  c.keep = 3
  c.nonfinite_reward = "skip"
  # The controller of Sec. 4.1: 2 layers of 35 units, Adam 6e-4.
  c.controller = dict(hidden_size=35, num_layers=2, temperature=1.0,
                      tanh_constant=None)
  if variant == "paper":
    layers = dict(num_layers=15, search_strides=False, skip_connections=True)
    c.num_rounds = 16  # 16 x 800 = 12,800 children
    c.data = dict(name="cifar10", data_dir="", num_val=5000, max_train=0,
                  split_seed=0, augment="cifar", cutout=0)
    c.child = dict(epochs=50, batch_size=128, learning_rate=0.1,
                   optimizer="sgd", momentum=0.9, weight_decay=1e-4,
                   eval_batch_size=500)
    batch, lr = 800, 6e-4
  elif variant == "tiny":
    layers = dict(num_layers=2, search_strides=False, skip_connections=True)
    c.num_rounds = 2
    c.data = dict(name="digits", data_dir="", num_val=100, max_train=256,
                  split_seed=0, augment="")
    c.child = dict(epochs=1, batch_size=32, learning_rate=0.05,
                   optimizer="sgd", momentum=0.9, weight_decay=1e-4,
                   eval_batch_size=100)
    batch, lr = 2, 0.01
  else:  # cpu, random
    layers = dict(num_layers=3, search_strides=True, skip_connections=True)
    c.num_rounds = 10
    c.data = dict(name="fashion_mnist", data_dir="", num_val=1000,
                  max_train=5000, split_seed=0, augment="")
    c.child = dict(epochs=1, batch_size=64, learning_rate=0.05,
                   optimizer="sgd", momentum=0.9, weight_decay=1e-4,
                   eval_batch_size=500)
    batch, lr = 8, 0.01
  c.space_kwargs = dict(layers)
  c.network = dict(layers)  # must equal space_kwargs (checked)
  c.reinforce = dict(batch_size=batch, learning_rate=lr, baseline_decay=0.95)
  c.random = dict(batch_size=batch)
  return c
