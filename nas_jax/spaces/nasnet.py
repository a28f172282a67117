"""The NASNet cell space (Zoph, Vasudevan, Shlens & Le, "Learning Transferable
Architectures for Scalable Image Recognition", CVPR 2018, Sec. 3).

The controller designs a normal cell and then a reduction cell. Each cell has
two inputs (``h_i`` and ``h_{i-1}``, the outputs of the two previous cells) and
``B`` blocks; each block takes five steps (Sec. 3, Fig. 3):

1. pick a hidden state from the cell inputs or earlier blocks,
2. pick a second hidden state the same way,
3. pick an op for the first,
4. pick an op for the second,
5. pick how to combine the two results (add or concatenate).

The new hidden state becomes a candidate input for later blocks of the same
cell. The text form and spec are the base class's.
"""

from __future__ import annotations

from nas_jax.spaces import base, cells

# Sec. 3: the 13 ops "selected based on their prevalence in the CNN
# literature", in the paper's order.
OPS = ("identity", "conv_1x3_3x1", "conv_1x7_7x1", "dil_conv_3x3",
       "avg_pool_3x3", "max_pool_3x3", "max_pool_5x5", "max_pool_7x7",
       "conv_1x1", "conv_3x3", "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7")
COMBINE = ("add", "concat")

OP_GROUP = "nasnet_op"
COMBINE_GROUP = "nasnet_combine"

CELL_TYPES = cells.CELL_TYPES


def space(num_blocks: int = 5) -> base.SearchSpace:
  """The NASNet search space (Zoph et al. 2018, Sec. 3).

  Args:
    num_blocks: blocks per cell (``B``; the paper uses ``B = 5``).

  Returns:
    A space of ``2 * 5 * num_blocks`` decisions: the normal cell, then the
    reduction cell, each with its own anchor slots.
  """
  decisions, init_anchors = cells.two_input_cells(
      "block", num_blocks, OPS, OP_GROUP, COMBINE, COMBINE_GROUP)
  return base.SearchSpace("nasnet", decisions, init_anchors)


# NASNet-A (Zoph et al. 2018, Fig. 4), wired as the authors' released model
# (TF-slim ``nasnet_utils.py``, ``NasNetANormalCell`` /
# ``NasNetAReductionCell``). Per block: input_a, input_b, op_a, op_b,
# combine; input 0 is h_{i-1}, 1 is h_i, 2 + b is block b. Every block adds.
_I, _AVG3, _MAX3 = OPS.index("identity"), OPS.index("avg_pool_3x3"), \
    OPS.index("max_pool_3x3")
_SEP3, _SEP5, _SEP7 = (OPS.index(f"sep_conv_{k}x{k}") for k in (3, 5, 7))
NASNET_A_NORMAL = ((0, 1, _SEP5, _SEP3, 0), (1, 1, _SEP5, _SEP3, 0),
                   (0, 1, _AVG3, _I, 0), (1, 1, _AVG3, _AVG3, 0),
                   (0, 0, _SEP3, _I, 0))
NASNET_A_REDUCE = ((0, 1, _SEP5, _SEP7, 0), (0, 1, _MAX3, _SEP7, 0),
                   (0, 1, _AVG3, _SEP5, 0), (3, 2, _I, _AVG3, 0),
                   (2, 0, _SEP3, _MAX3, 0))
# The states the released cells concatenate as their output (slots as
# above). The paper's rule -- concatenate the blocks no block reads -- would
# give (2, ..., 6) and (4, 5, 6); the released model also concatenates h_i
# in the normal cell (6 F channels: "6 @ 768" has F = 768 / 6 / 4 = 32
# filters in the first stage) and block 1 in the reduction cell.
NASNET_A_CONCAT = ((1, 2, 3, 4, 5, 6), (3, 4, 5, 6))

NAMED = ("nasnet_a",)


def named(name: str):
  """``(space, arch, concat)`` of a published architecture (``"nasnet_a"``):
  ``concat`` lists the states each cell (normal, reduction) concatenates,
  or None for the paper's rule (for ``NASNet(fixed_concat=...)``)."""
  if name != "nasnet_a":
    raise base.InvalidArchitectureError(
        f"unknown named architecture {name!r}; known: {', '.join(NAMED)}")
  s = space(5)
  codes = [v for cell in (NASNET_A_NORMAL, NASNET_A_REDUCE) for block in cell
           for v in block]
  return s, s.validate(codes), NASNET_A_CONCAT
