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
