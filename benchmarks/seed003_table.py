"""The seed-003 study's pre-computed reward table: every child of the small
space (two consecutive ops, 8 x 8 = 64 children) trained from scratch once.

Each child is trained with ``ChildTrainer`` (one jitted train step serves all
64 children, so the step compiles once) with the network and child-training
settings of ``experiments/configs/seed003_digits.py`` (``num_cells=2``,
``channels=16``; SGD-Nesterov lr 0.05 cosine-decayed, momentum 0.9, weight
decay 1e-4, batch 32, 4 epochs, 300 validation images). The reward is the
validation accuracy (exactly what ``ChildTrainer.train_and_evaluate``
returns); the test accuracy of the same trained weights is recorded too but is
never a reward.

The JSON written (default ``benchmarks/results/seed003_small_<dataset>.json``)
holds the dataset, split sizes, epochs, batch size, network and child settings,
seed, machine, and per child ``text``, ``index`` (``space.index``),
``val_acc``, ``test_acc``, ``seconds``, ``num_params`` (the child's own
weights: stem, the two chosen ops of every cell, classifier) and
``supernet_params`` (what ``ChildResult.num_params`` counts: every candidate
op's weights, since all of them are created at init), plus the total wall
time. ``benchmarks/seed003_search.py`` reads it.

Run from the repository root::

    PYTHONPATH=. python benchmarks/seed003_table.py                  # digits
    PYTHONPATH=. python benchmarks/seed003_table.py --quick          # smoke
    PYTHONPATH=. python benchmarks/seed003_table.py --dataset fashion_mnist \\
        --max_train 5000 --epochs 1

``--quick`` trains 3 children for 1 epoch and writes to /tmp unless ``--out``
is given.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.children import cell_net
from nas_jax.data import datasets
from nas_jax.evaluators import train_from_scratch
from nas_jax.spaces import seed003

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py)

# The settings of experiments/configs/seed003_digits.py (network and child).
NUM_CELLS = 2
CHANNELS = 16
LEARNING_RATE = 0.05
OPTIMIZER = "sgd"
WEIGHT_DECAY = 1e-4
NUM_VAL = 300
SPLIT_SEED = 0
# Default training length: 4 epochs of batch 32 as in the config, which keeps
# the whole digits table at about 7-10 minutes on 2 shared CPU cores.
EPOCHS = 4
BATCH_SIZE = 32
# The child whose val accuracy is re-checked against
# ChildTrainer.train_and_evaluate (a guard that both use one loop).
VERIFY_TEXT = "conv_3x3>conv_3x3"


def train_child(trainer: train_from_scratch.ChildTrainer, arch) -> dict:
  """Trains one child with the trainer's own loop (so its val accuracy is
  ``train_and_evaluate``'s) and also scores the test split."""
  space = trainer.space
  arch = space.validate(arch)
  t0 = time.perf_counter()
  state, train_loss = trainer.train(arch)
  ds = trainer.dataset
  val = trainer.accuracy(state, arch, ds.val_images, ds.val_labels)
  test = trainer.accuracy(state, arch, ds.test_images, ds.test_labels)
  return {
      "text": space.to_text(arch),
      "index": int(space.index(jnp.asarray(arch))),
      "val_acc": val, "test_acc": test, "train_loss": train_loss,
      "seconds": time.perf_counter() - t0,
      "num_params": cell_net.child_param_count(space, state.params, arch),
      "supernet_params": sum(int(np.prod(p.shape))
                             for p in jax.tree.leaves(state.params)),
  }


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dataset", default="digits",
                 choices=("digits", "mnist", "fashion_mnist", "cifar10"))
  p.add_argument("--data_dir", default=None,
                 help="folder holding tfds/<name>/ (default "
                      "$NAS_JAX_DATA_DIR, then ../shared/data)")
  p.add_argument("--max_train", type=int, default=0,
                 help="subsample the training split to this many images "
                      "(0: all)")
  p.add_argument("--num_val", type=int, default=NUM_VAL,
                 help=f"validation images (default {NUM_VAL})")
  p.add_argument("--epochs", type=int, default=EPOCHS)
  p.add_argument("--batch_size", type=int, default=BATCH_SIZE)
  p.add_argument("--seed", type=int, default=0,
                 help="ChildTrainer seed (child init and batch order)")
  p.add_argument("--split_seed", type=int, default=SPLIT_SEED,
                 help="seed of the train / validation split")
  p.add_argument("--out", default=None,
                 help="JSON output (default benchmarks/results/"
                      "seed003_small_<dataset>.json; /tmp/... with --quick)")
  p.add_argument("--no_verify", action="store_true",
                 help=f"skip re-training {VERIFY_TEXT} with "
                      "ChildTrainer.train_and_evaluate to check the loop")
  p.add_argument("--quick", action="store_true",
                 help="smoke test: 3 children, 1 epoch")
  args = p.parse_args(argv)
  if args.quick:
    args.epochs = 1
  if args.out is None:
    folder = (pathlib.Path("/tmp") if args.quick
              else pathlib.Path(__file__).resolve().parent / "results")
    args.out = str(folder / f"seed003_small_{args.dataset}.json")
  if args.epochs < 1 or args.batch_size < 1 or args.max_train < 0:
    p.error("--epochs and --batch_size must be >= 1, --max_train >= 0")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  info = common.machine_info()
  common.print_header(info)
  t_start = time.perf_counter()
  try:
    ds = datasets.load(args.dataset, data_dir=args.data_dir,
                       num_val=args.num_val or None,
                       max_train=args.max_train or None, seed=args.split_seed)
  except (FileNotFoundError, ValueError, ImportError) as e:
    print(f"error: cannot load {args.dataset}: {e}", file=sys.stderr)
    return 2
  space = seed003.small_space()
  network = dict(num_cells=NUM_CELLS, channels=CHANNELS)
  child = dict(epochs=args.epochs, batch_size=args.batch_size,
               learning_rate=LEARNING_RATE, optimizer=OPTIMIZER,
               weight_decay=WEIGHT_DECAY)
  net = cell_net.make_network(space.name, num_classes=ds.num_classes,
                              **network)
  trainer = train_from_scratch.ChildTrainer(space, net, ds, seed=args.seed,
                                            **child)
  print(f"table: {space.name}, {space.num_architectures} children on "
        f"{ds.name} ({len(ds.train_labels)} train / {len(ds.val_labels)} val "
        f"/ {len(ds.test_labels)} test images {ds.image_shape}); network "
        f"{network}; child {child}; seed {args.seed}", flush=True)

  indices = range(space.num_architectures)
  if args.quick:
    indices = [0, 9, space.num_architectures - 1]
  children = []
  for n, i in enumerate(indices):
    row = train_child(trainer, space.from_index(i))
    children.append(row)
    print(f"[{n + 1:2d}/{len(indices)}] {row['text']:<28s} val "
          f"{row['val_acc']:.4f} test {row['test_acc']:.4f} "
          f"{row['num_params']:6d} params {row['seconds']:6.1f}s", flush=True)
  wall = time.perf_counter() - t_start

  verify = None
  if not args.no_verify:
    arch = space.from_text(VERIFY_TEXT)
    mine = next((c for c in children if c["text"] == VERIFY_TEXT), None)
    if mine is None:
      mine = train_child(trainer, arch)
    ref = trainer.train_and_evaluate(arch)
    verify = {"text": VERIFY_TEXT, "table_val_acc": mine["val_acc"],
              "train_and_evaluate_val_acc": ref.val_accuracy,
              "match": mine["val_acc"] == ref.val_accuracy}
    print(f"check: {VERIFY_TEXT} val acc {mine['val_acc']:.4f} here, "
          f"{ref.val_accuracy:.4f} from ChildTrainer.train_and_evaluate "
          f"({'match' if verify['match'] else 'MISMATCH'})")

  vals = [c["val_acc"] for c in children]
  best = max(vals)
  best_texts = [c["text"] for c in children if c["val_acc"] == best]
  out = {
      "space": space.name, "dataset": ds.name,
      "num_train": len(ds.train_labels), "num_val": len(ds.val_labels),
      "num_test": len(ds.test_labels), "image_shape": list(ds.image_shape),
      "max_train": args.max_train, "split_seed": args.split_seed,
      "epochs": args.epochs, "batch_size": args.batch_size,
      "network": network, "child": child, "seed": args.seed,
      "machine": info, "train_step_compilations": trainer.num_traces,
      "total_wall_seconds": wall, "verify": verify,
      "children": children,
  }
  path = pathlib.Path(args.out)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(out, indent=1))
  print(f"\nbest val acc {best:.4f} ({len(best_texts)} child(ren): "
        f"{', '.join(best_texts)}); median val acc "
        f"{statistics.median(vals):.4f}; test acc of the best: "
        + ", ".join(f"{c['test_acc']:.4f}" for c in children
                    if c["val_acc"] == best))
  print(f"wall time {wall:.1f}s for {len(children)} children "
        f"(train step compiled {trainer.num_traces} time(s)); wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
