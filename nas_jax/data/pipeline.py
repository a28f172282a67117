"""Deterministic host-side batching and placement of batches on a mesh.

Batches stay uint8 on the host (4x less to copy than float32); normalization
and augmentation run on the device, inside the jitted step. The order of an
epoch depends only on (seed, epoch), so a run restarted at epoch e sees the
same batches as the original run did.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

# Placement on a mesh lives in nas_jax.parallel.mesh; re-exported here for the
# callers that batch and place in one place.
from nas_jax.parallel.mesh import (  # pylint: disable=unused-import
    DATA_AXIS, data_mesh, shard_batch)


def num_batches(num_examples: int, batch_size: int, *,
                drop_remainder: bool = True) -> int:
  """How many batches ``batches`` yields for ``num_examples`` examples."""
  _check_batch_size(batch_size)
  if drop_remainder:
    return num_examples // batch_size
  return -(-num_examples // batch_size)


def epoch_permutation(num_examples: int, *, seed: int, epoch: int
                      ) -> np.ndarray:
  """The example order of one epoch: a function of (seed, epoch) only."""
  if seed < 0 or epoch < 0:
    raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, "
                     f"epoch={epoch}")
  # Both numbers seed the generator (SeedSequence mixes them), so epochs are
  # independent streams and need no state carried between them.
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batches(images: np.ndarray, labels: np.ndarray, batch_size: int, *,
            seed: int, epoch: int, shuffle: bool = True,
            drop_remainder: bool = True
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields (images, int32 labels) numpy batches for one epoch.

  Args:
    images: [N, ...] array, yielded in its own dtype (uint8 for ``Dataset``).
    labels: [N] integer labels.
    batch_size: examples per batch.
    seed: with ``epoch``, fixes the shuffle order.
    epoch: epoch number.
    shuffle: permute the examples; else source order.
    drop_remainder: drop the last partial batch (keeps shapes static, so a
      jitted step compiles once); else yield it, smaller.
  """
  n = len(labels)
  if len(images) != n:
    raise ValueError(f"images and labels differ in length: {len(images)} vs "
                     f"{n}")
  _check_batch_size(batch_size)
  order = (epoch_permutation(n, seed=seed, epoch=epoch) if shuffle
           else np.arange(n))
  for b in range(num_batches(n, batch_size, drop_remainder=drop_remainder)):
    idx = order[b * batch_size:(b + 1) * batch_size]
    if not shuffle:
      idx = slice(idx[0], idx[-1] + 1)  # A view, no gather copy.
    yield images[idx], np.asarray(labels[idx], np.int32)


def _check_batch_size(batch_size: int) -> None:
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
