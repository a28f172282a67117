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

from nas_jax.spaces import base

# Sec. 3: the 13 ops "selected based on their prevalence in the CNN
# literature", in the paper's order.
OPS = ("identity", "conv_1x3_3x1", "conv_1x7_7x1", "dil_conv_3x3",
       "avg_pool_3x3", "max_pool_3x3", "max_pool_5x5", "max_pool_7x7",
       "conv_1x1", "conv_3x3", "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7")
COMBINE = ("add", "concat")

OP_GROUP = "nasnet_op"
COMBINE_GROUP = "nasnet_combine"

CELL_TYPES = ("normal", "reduce")
_NUM_CELL_INPUTS = 2  # h_i and h_{i-1}.


def _cell(cell: str, cell_base: int, num_blocks: int) -> list[base.Decision]:
  """The ``5 * num_blocks`` decisions of one cell.

  The cell's anchor slots start at ``cell_base``: two for its inputs, then
  one per block, so block ``b`` can point at exactly the ``2 + b`` hidden
  states that exist when it is designed.
  """
  decisions = []
  for b in range(num_blocks):
    prefix = f"{cell}/block{b}"
    for side in ("a", "b"):
      decisions.append(base.Decision(
          name=f"{prefix}/input_{side}", kind=base.POINTER,
          num_inputs=_NUM_CELL_INPUTS + b, anchor_base=cell_base))
    for side in ("a", "b"):
      decisions.append(base.Decision(
          name=f"{prefix}/op_{side}", choices=OPS, group=OP_GROUP))
    # Step 5 completes the block, so its state stands for the new hidden
    # state that later blocks may select.
    decisions.append(base.Decision(
        name=f"{prefix}/combine", choices=COMBINE, group=COMBINE_GROUP,
        anchor=cell_base + _NUM_CELL_INPUTS + b))
  return decisions


def space(num_blocks: int = 5) -> base.SearchSpace:
  """The NASNet search space (Zoph et al. 2018, Sec. 3).

  Args:
    num_blocks: blocks per cell (``B``; the paper uses ``B = 5``).

  Returns:
    A space of ``2 * 5 * num_blocks`` decisions: the normal cell, then the
    reduction cell, each with its own anchor slots.
  """
  if (not isinstance(num_blocks, int) or isinstance(num_blocks, bool)
      or num_blocks < 1):
    raise ValueError(f"num_blocks must be a positive int, got {num_blocks!r}")
  cell_size = _NUM_CELL_INPUTS + num_blocks
  decisions = []
  init_anchors = []
  for c, cell in enumerate(CELL_TYPES):
    cell_base = c * cell_size
    init_anchors += [cell_base + k for k in range(_NUM_CELL_INPUTS)]
    decisions += _cell(cell, cell_base, num_blocks)
  return base.SearchSpace("nasnet", decisions, init_anchors)
