r"""DARTS (Liu et al., ICLR 2019): a mixed-op supernet trained by bilevel
optimisation, then the cell derived from alpha (argmax op per edge
excluding ``none``; top-2 incoming edges per node in the micro cell).

  python experiments/main.py \
    --config=experiments/configs/darts.py:nb201_digits --workdir=runs/darts

Variants:

* ``nb201_digits``: first-order DARTS on the NAS-Bench-201 cell, trained on
  the embedded scikit-learn digits (8x8, no download), a minute or two on a
  CPU; the derived cell is looked up in the CIFAR-10 NAS-Bench-201 table
  (``nasbench201/nb201_cifar10.csv`` under ``$NAS_JAX_DATA_DIR`` or
  ``../shared/data``; without it, no lookup).
* ``nb201_fmnist``: the same on Fashion-MNIST (``../shared/data/tfds``):
  4,000 training and 2,000 validation images (alpha's data), 28x28.
* ``second_order``: ``nb201_digits`` with the second-order architecture
  gradient (Eq. 7-8, finite-difference Hessian-vector product).
* ``micro``: first order on the ENAS micro cell (2 nodes, its 5 ops, no
  ``none``), digits; the derived cell retrains with
  ``enas_retrain.py:micro`` (``best.json`` holds the command). Its
  supernet (every separable conv on every edge) takes minutes to compile
  on a 2-core CPU (4 min for 3 nodes under a load of 10).
* ``tiny``: seconds (CI); no table lookup.

Optimisers are the paper's (Sec. 3.1.1): w by SGD (momentum 0.9, cosine
0.025 -> 0.001, weight decay 3e-4, gradient norm 5), alpha by Adam
(betas 0.5, 0.999, weight decay 1e-3); alpha's learning rate is 3e-3 here,
10x the paper's 3e-4, because a CPU-sized search takes ~100x fewer steps
than the paper's 50 epochs of CIFAR-10 (``--config.arch.learning_rate=3e-4``
restores it). The same batch size serves both steps, as in the paper.
"""

import ml_collections

VARIANTS = ("nb201_digits", "nb201_fmnist", "second_order", "micro", "tiny")


def get_config(variant: str = "nb201_digits") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.run = "darts"
  c.seed = 0
  c.space = "nasbench201"
  c.space_kwargs = {}
  c.order = 1                       # 2: second order (Eq. 7-8)
  c.num_epochs = 20
  c.checkpoint_every = 1            # epochs
  c.keep = 3
  c.table_path = ""                 # '': the data directory's NB201 CSV
                                    # ('off': no lookup)
  c.eval_batch_size = 256
  c.data = dict(name="digits", data_dir="", num_val=500, max_train=0,
                split_seed=0)
  c.network = dict(channels=8, num_cells=1, num_reductions=1)
  c.weights = dict(batch_size=32, learning_rate=0.025, lr_min=0.001,
                   momentum=0.9, weight_decay=3e-4, grad_clip=5.0)
  c.arch = dict(learning_rate=3e-3, b1=0.5, b2=0.999, weight_decay=1e-3,
                init_scale=1e-3)
  if variant == "nb201_fmnist":
    c.data.update(name="fashion_mnist", num_val=2000, max_train=4000)
    c.network.update(num_reductions=2)
    c.weights.update(batch_size=64)
    c.num_epochs = 8
  elif variant == "second_order":
    c.order = 2
  elif variant == "micro":
    c.space = "enas_micro"
    c.space_kwargs = {"num_nodes": 2}
    c.num_epochs = 8
  elif variant == "tiny":
    c.num_epochs = 2
    c.data.update(num_val=64, max_train=64)
    c.network.update(channels=4)
    c.weights.update(batch_size=32)
    c.eval_batch_size = 64
    c.table_path = "off"            # no table lookup: seconds matter here
  return c
