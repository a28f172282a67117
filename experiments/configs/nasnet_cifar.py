r"""The NASNet search (Zoph et al., CVPR 2018): a PPO controller proposes
normal + reduction cell pairs (B = 5 blocks each), children are stacks of
those cells trained from scratch, many at once (one per device) with
synchronous controller replicas; random search is the baseline beside it.

  python experiments/main.py \
    --config=experiments/configs/nasnet_cifar.py:cpu --workdir=runs/nasnet_cpu

Variants:

* ``paper``: CIFAR-10 at the search settings of the paper (Sec. 4 and
  Appendix A): a 1-layer LSTM controller of 100 units trained with PPO at
  learning rate 3.5e-4 (entropy weight 1e-5, baseline decay 0.95); children
  of N = 2 cells between reductions with F = 32 filters, trained 20 epochs;
  about 20,000 children (45 rounds of 450: the paper's 450 GPUs, here one
  child per device; the device count must divide 450). The paper's workers
  reported asynchronously; here each round is one synchronous batch.
* ``cpu``: Fashion-MNIST (from ``../shared/data``) on this CPU: cells of
  B = 2 blocks, N = 1, F = 8, one reduction, 1 epoch on 5,000 images, 10
  rounds of 8 children. (Every op choice is a 13-way switch in the one
  compiled program, so compiling dominates on a CPU: B = 5 takes minutes.)
* ``tiny``: the embedded 8x8 digits, cells of B = 1 block, 2 controller
  updates of 2 children, 1 epoch each (tests run it with
  ``--config.ppo.batch_size=8`` on 8 fake devices, one child each).
* ``random``: the ``cpu`` search with random search (the paper's Sec. 4.4
  baseline: random search came close to RL on CIFAR-10).

PPO's epochs and minibatches per round are not given in the paper; ours
(4 epochs, minibatches of 90 at 450 children, else half the round)
are choices.
"""

import ml_collections

VARIANTS = ("paper", "cpu", "tiny", "random")


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.run = "train"
  c.seed = 0
  c.space = "nasnet"
  blocks = {"paper": 5, "tiny": 1}.get(variant, 2)
  c.space_kwargs = dict(num_blocks=blocks)
  c.algorithm = "random" if variant == "random" else "ppo"
  c.data_parallel = False
  c.per_device_children = True  # one child per device, replicas in sync
  c.checkpoint_every = 1
  c.keep = 3
  c.nonfinite_reward = "skip"
  c.controller = dict(hidden_size=100, num_layers=1, temperature=1.0,
                      tanh_constant=None)
  if variant == "paper":
    c.num_rounds = 45  # 45 x 450 = 20,250 children
    c.data = dict(name="cifar10", data_dir="", num_val=5000, max_train=0,
                  split_seed=0, augment="cifar", cutout=0)
    c.network = dict(num_blocks=5, num_cells=2, channels=32,
                     num_reductions=2)
    c.child = dict(epochs=20, batch_size=32, learning_rate=0.025,
                   optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                   eval_batch_size=500)
    batch, lr = 450, 3.5e-4
  elif variant == "tiny":
    c.num_rounds = 2
    c.data = dict(name="digits", data_dir="", num_val=100, max_train=128,
                  split_seed=0, augment="")
    c.network = dict(num_blocks=1, num_cells=1, channels=4,
                     num_reductions=1)
    c.child = dict(epochs=1, batch_size=32, learning_rate=0.05,
                   optimizer="sgd", momentum=0.9, weight_decay=1e-4,
                   eval_batch_size=100)
    batch, lr = 2, 0.01
  else:  # cpu, random
    c.num_rounds = 10
    c.data = dict(name="fashion_mnist", data_dir="", num_val=1000,
                  max_train=5000, split_seed=0, augment="")
    c.network = dict(num_blocks=2, num_cells=1, channels=8,
                     num_reductions=1)
    c.child = dict(epochs=1, batch_size=64, learning_rate=0.05,
                   optimizer="sgd", momentum=0.9, weight_decay=1e-4,
                   eval_batch_size=500)
    batch, lr = 8, 0.01
  c.ppo = dict(batch_size=batch, minibatch_size=90 if batch == 450 else
               max(batch // 2, 1),
               num_epochs=4, learning_rate=lr, baseline_decay=0.95,
               clip_epsilon=0.2, entropy_weight=1e-5)
  c.random = dict(batch_size=batch)
  return c
