"""The two-input cell shared by NASNet (Zoph et al. 2018, Sec. 3) and the
ENAS micro space (Pham et al. 2018, Sec. 2.4).

A normal cell then a reduction cell; each has two input anchors (the outputs
of the two previous cells) and ``num_units`` units. Unit ``u`` picks two
inputs among the ``2 + u`` hidden states that exist when it is designed,
one op for each, and (NASNet only) how to combine them. The unit's last
decision writes its anchor, so later units can point at it.
"""

from __future__ import annotations

from nas_jax.spaces import base

CELL_TYPES = ("normal", "reduce")
NUM_CELL_INPUTS = 2  # h_{i-1} and h_i: the outputs of the two previous cells


def check_positive_int(name: str, value) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}")


def two_input_cells(unit: str, num_units: int, ops: tuple[str, ...],
                    op_group: str, combine: tuple[str, ...] = (),
                    combine_group: str | None = None
                    ) -> tuple[list[base.Decision], list[int]]:
  """Decisions and initial anchor slots of a normal + a reduction cell.

  Unit ``u`` of a cell whose slots start at ``cell_base`` is written to slot
  ``cell_base + 2 + u``; the cell's two inputs are init anchors.
  """
  check_positive_int(f"num_{unit}s", num_units)
  decisions, init_anchors = [], []
  for c, cell in enumerate(CELL_TYPES):
    cell_base = c * (NUM_CELL_INPUTS + num_units)
    init_anchors += [cell_base + k for k in range(NUM_CELL_INPUTS)]
    for u in range(num_units):
      prefix = f"{cell}/{unit}{u}"
      anchor = cell_base + NUM_CELL_INPUTS + u
      for side in ("a", "b"):
        decisions.append(base.Decision(
            name=f"{prefix}/input_{side}", kind=base.POINTER,
            num_inputs=NUM_CELL_INPUTS + u, anchor_base=cell_base))
      for side in ("a", "b"):
        last = side == "b" and not combine
        decisions.append(base.Decision(
            name=f"{prefix}/op_{side}", choices=ops, group=op_group,
            anchor=anchor if last else -1))
      if combine:
        decisions.append(base.Decision(
            name=f"{prefix}/combine", choices=combine, group=combine_group,
            anchor=anchor))
  return decisions, init_anchors
