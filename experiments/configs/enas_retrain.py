r"""Retrain one ENAS architecture from scratch (Pham et al. 2018, Sec. 3.2)
as a stand-alone network with fixed ops: the derived cell of a search, or a
published one.

  python experiments/main.py \
    --config=experiments/configs/enas_retrain.py:tiny_micro \
    --config.arch='<text from best.json>' --workdir=runs/retrain

``--config.arch`` takes the one-line text of an architecture of the space
(``best.json``'s ``text``) or a published name: ``enas_micro_paper`` (the
cells of ``scripts/cifar10_micro_final.sh``), ``enas_macro_paper`` (the
24-layer network of ``scripts/cifar10_macro_final.sh``; set
``--config.space_kwargs.num_layers=24``).

Variants:

* ``micro``: CIFAR-10 with the authors' final recipe
  (``cifar10_micro_final.sh``): N = 5 cells per stage at F = 36 filters, 630
  epochs, batch 144, SGDR cosine 0.05 -> 0.0001 (T_0 = 10, T_mul = 2), L2
  2e-4, gradient norm 5, dropout 0.2 (keep_prob 0.8), ScheduledDropPath to
  0.4 (drop_path_keep_prob 0.6), auxiliary head (weight 0.4), cutout 16.
* ``macro``: CIFAR-10, ``cifar10_macro_final.sh``: 24 layers, 96 filters,
  310 epochs, batch 100, dropout 0.5, channels doubling at the reductions.
* ``fashion_mnist``: a short CPU recipe for the micro space on
  Fashion-MNIST (used by ``benchmarks/enas_cnn.py --quality``).
* ``tiny_micro`` / ``tiny_macro``: the embedded digits, one epoch (CI).
"""

import ml_collections

VARIANTS = ("micro", "macro", "fashion_mnist", "tiny_micro", "tiny_macro")


def get_config(variant: str = "micro") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.run = "retrain"
  c.seed = 0
  macro = variant in ("macro", "tiny_macro")
  c.space = "enas_macro" if macro else "enas_micro"
  c.space_kwargs = {"num_layers": 24} if macro else {"num_nodes": 5}
  c.arch = "enas_macro_paper" if macro else "enas_micro_paper"
  c.keep = 3
  c.eval_batch_size = 500
  c.data = dict(name="cifar10", data_dir="", num_val=5000, max_train=0,
                split_seed=0, augment="cifar", cutout=16)
  if macro:
    c.network = dict(channels=96, grow_channels=True, dropout=0.5)
  else:
    c.network = dict(num_cells=5, channels=36, num_reductions=2,
                     stem_multiplier=3, aux_head=True, dropout=0.2)
  c.train = dict(epochs=310 if macro else 630, batch_size=100 if macro else 144,
                 lr_max=0.05, lr_min=0.001 if macro else 0.0001, lr_t0=10.0,
                 lr_t_mul=2.0, momentum=0.9, weight_decay=2e-4, grad_clip=5.0,
                 drop_path=0.0 if macro else 0.4, aux_weight=0.4)
  if variant == "fashion_mnist":
    c.data = dict(name="fashion_mnist", data_dir="", num_val=2000,
                  max_train=8000, split_seed=0, augment="", cutout=0)
    c.network = dict(num_cells=1, channels=12, num_reductions=2,
                     stem_multiplier=3, aux_head=False, dropout=0.0)
    c.train.epochs = 3
    c.train.batch_size = 64
    c.train.lr_t0 = 3.0
    c.train.drop_path = 0.1
  elif variant.startswith("tiny"):
    c.data = dict(name="digits", data_dir="", num_val=128, max_train=128,
                  split_seed=0, augment="", cutout=0)
    if macro:
      c.space_kwargs = {"num_layers": 3}
      c.arch = "0,1,1,2,0,1"
      c.network = dict(channels=4, grow_channels=True, dropout=0.1)
    else:
      c.space_kwargs = {"num_nodes": 1}
      c.arch = "0,1,1,2,1,0,4,0"
      c.network = dict(num_cells=1, channels=4, num_reductions=1,
                       stem_multiplier=1, aux_head=True, dropout=0.1)
    c.train.epochs = 1
    c.train.batch_size = 32
    c.train.drop_path = 0.2
  return c
