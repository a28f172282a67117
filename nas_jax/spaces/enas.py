"""The three ENAS search spaces (Pham et al., "Efficient Neural Architecture
Search via Parameter Sharing", ICML 2018).

* :func:`micro_space`: the convolutional cell space (Sec. 2.4, "Designing
  Convolutional Cells"): a normal cell and a reduction cell, each with two
  cell inputs and ``num_nodes`` nodes; every node picks two earlier nodes and
  one op for each.
* :func:`macro_space`: the whole-network space (Sec. 2.3, "Designing
  Convolutional Networks"): every layer picks an op and which earlier layers
  it takes skip connections from.
* :func:`rnn_space`: the recurrent cell space (Sec. 2.1, "Designing Recurrent
  Cells"): node 0 combines ``x_t`` and ``h_{t-1}``; every later node picks one
  previous node and an activation; loose ends are averaged into ``h_t``.

All three use the base class's comma-separated text form and spec; ENAS shares
one softmax head per decision type, hence one ``group`` per op vocabulary.
"""

from __future__ import annotations

from nas_jax.spaces import base, cells

# Sec. 2.4: the five cell ops.
MICRO_OPS = ("identity", "sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3",
             "max_pool_3x3")
# Sec. 2.3: the six layer ops.
MACRO_OPS = ("conv_3x3", "conv_5x5", "sep_conv_3x3", "sep_conv_5x5",
             "max_pool_3x3", "avg_pool_3x3")
# Sec. 2.1: the four activations of the recurrent cell.
RNN_ACTIVATIONS = ("tanh", "relu", "identity", "sigmoid")

MICRO_GROUP = "enas_micro_op"
MACRO_GROUP = "enas_macro_op"
RNN_GROUP = "enas_rnn_act"

CELL_TYPES = cells.CELL_TYPES



# -- micro (cell) space -------------------------------------------------------


def micro_space(num_nodes: int = 5) -> base.SearchSpace:
  """The ENAS convolutional cell space (Pham et al. 2018, Sec. 2.4).

  Args:
    num_nodes: nodes per cell (``B``; the paper uses 5, plus the two inputs).

  Returns:
    A space of ``2 * 4 * num_nodes`` decisions: the normal cell, then the
    reduction cell; per node two input pointers, then two ops.
  """
  decisions, init_anchors = cells.two_input_cells(
      "node", num_nodes, MICRO_OPS, MICRO_GROUP)
  return base.SearchSpace("enas_micro", decisions, init_anchors)


# -- macro (whole network) space ----------------------------------------------


def macro_space(num_layers: int = 12) -> base.SearchSpace:
  """The ENAS whole-network space (Pham et al. 2018, Sec. 2.3).

  Layer ``i`` picks an op (written to anchor slot ``i``), then one bit per
  earlier layer ``j < i`` saying whether ``j`` feeds ``i`` by a skip
  connection; the bits attend to layer ``j``'s anchor as in NAS-RL's
  skip-connection attention.

  Args:
    num_layers: the number of layers (12 in the paper's CIFAR-10 search).

  Returns:
    A space of ``num_layers + num_layers * (num_layers - 1) / 2`` decisions.
  """
  cells.check_positive_int("num_layers", num_layers)
  decisions = []
  for i in range(num_layers):
    decisions.append(base.Decision(
        name=f"layer{i}/op", choices=MACRO_OPS, group=MACRO_GROUP, anchor=i))
    decisions += [
        base.Decision(name=f"layer{i}/skip_from{j}", kind=base.SKIP, target=j)
        for j in range(i)
    ]
  return base.SearchSpace("enas_macro", decisions)


# -- recurrent cell space -----------------------------------------------------


def rnn_space(num_nodes: int = 12) -> base.SearchSpace:
  """The ENAS recurrent cell space (Pham et al. 2018, Sec. 2.1).

  Node 0 always reads ``x_t`` and ``h_{t-1}``, so it only picks an activation.
  Node ``i >= 1`` picks a previous node ``0..i-1`` (a pointer over anchor
  slots ``0..i-1``) and then an activation, written to slot ``i``. Which nodes
  are loose ends follows from the pointers, so it is not a decision.

  Args:
    num_nodes: nodes in the cell (12 in the paper's Penn Treebank search).

  Returns:
    A space of ``2 * num_nodes - 1`` decisions.
  """
  cells.check_positive_int("num_nodes", num_nodes)
  decisions = [base.Decision(
      name="node0/act", choices=RNN_ACTIVATIONS, group=RNN_GROUP, anchor=0)]
  for i in range(1, num_nodes):
    decisions.append(base.Decision(
        name=f"node{i}/prev", kind=base.POINTER, num_inputs=i, anchor_base=0))
    decisions.append(base.Decision(
        name=f"node{i}/act", choices=RNN_ACTIVATIONS, group=RNN_GROUP,
        anchor=i))
  return RNNCellSpace("enas_rnn", decisions)


class RNNCellSpace(base.SearchSpace):
  """The ENAS recurrent cell space with a readable text form: node 0's
  activation, then ``prev:act`` for every later node, joined by ``;``, e.g.
  ``tanh;0:relu;1:identity`` (node 1 = relu of node 0, node 2 = identity of
  node 1). ``from_text`` also reads the generic ``0,0,1,...`` codes."""

  def to_text(self, arch) -> str:
    a = self.validate(arch)
    parts = [RNN_ACTIVATIONS[a[0]]]
    parts += [f"{a[k]}:{RNN_ACTIVATIONS[a[k + 1]]}"
              for k in range(1, len(a), 2)]
    return ";".join(parts)

  def from_text(self, text: str):
    """Reads the readable form, or the base class's comma-separated codes,
    or the authors' space-separated ``fixed_arc`` string."""
    if ";" not in text and text.strip() not in RNN_ACTIVATIONS:
      return super().from_text(",".join(text.replace(",", " ").split()))
    n = (self.num_decisions + 1) // 2
    parts = text.strip().split(";")
    if len(parts) != n:
      raise base.InvalidArchitectureError(
          f"space {self.name!r}: {text!r} has {len(parts)} ';'-separated "
          f"nodes, expected {n} (e.g. 'tanh;0:relu;...': node 0's "
          f"activation, then prev:activation per node)")
    values = [self.decisions[0].value(parts[0])]
    for i, part in enumerate(parts[1:], start=1):
      prev, sep, act = part.partition(":")
      if not sep or not prev.strip().lstrip("-").isdigit():
        raise base.InvalidArchitectureError(
            f"space {self.name!r}: node {i} is {part!r}; expected "
            f"'prev:activation' with prev in 0..{i - 1} and activation one "
            f"of {', '.join(RNN_ACTIVATIONS)}")
      values += [self.decisions[2 * i - 1].value(int(prev)),
                 self.decisions[2 * i].value(act.strip())]
    return self.validate(values)


# The recurrent cell ENAS found on Penn Treebank (Pham et al. 2018, Fig. 6),
# as the authors' scripts/ptb_final.sh gives it ("fixed_arc": node 0's
# function, then (prev, function) per node, functions 0 tanh, 1 ReLU,
# 2 identity, 3 sigmoid). Six loose ends are averaged; only tanh and ReLU
# appear, as the paper notes.
PTB_CELL = "tanh;0:tanh;1:relu;2:relu;2:tanh;2:tanh;5:relu;1:tanh;6:relu;8:relu;8:relu;8:relu"
PTB_CELL_FIXED_ARC = "0 0 0 1 1 2 1 2 0 2 0 5 1 1 0 6 1 8 1 8 1 8 1"
NAMED_RNN_CELLS = {"enas_rnn_paper": PTB_CELL}


def named_rnn_cell(name: str):
  """A published recurrent cell by name, ``int32[23]`` of ``rnn_space(12)``."""
  if name not in NAMED_RNN_CELLS:
    raise ValueError(f"unknown named cell {name!r}; known: "
                     f"{', '.join(NAMED_RNN_CELLS)}")
  return rnn_space(12).from_text(NAMED_RNN_CELLS[name])


# -- the published ENAS architectures ----------------------------------------
#
# The authors' code (github.com/melodyguan/enas) writes a micro cell as four
# numbers per node, (x_input, x_op, y_input, y_op), with the ops ordered
# sep 3x3, sep 5x5, avg pool, max pool, identity; the macro network as, per
# layer, the op (conv 3x3, sep 3x3, conv 5x5, sep 5x5, avg pool, max pool)
# and the layer's skip bits. The converters below map both to this module's
# decision order and op lists, so the published strings are kept verbatim.

_AUTHORS_MICRO_OPS = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3",
                      "max_pool_3x3", "identity")
_AUTHORS_MACRO_OPS = ("conv_3x3", "sep_conv_3x3", "conv_5x5", "sep_conv_5x5",
                      "avg_pool_3x3", "max_pool_3x3")


def _ints(text: str) -> list[int]:
  try:
    return [int(v) for v in text.split()]
  except ValueError:
    raise base.InvalidArchitectureError(
        f"cannot read {text!r}: expected space-separated integers") from None


def from_authors_micro(normal: str, reduce: str) -> tuple[base.SearchSpace,
                                                          "np.ndarray"]:
  """``(space, arch)`` for the authors' ``--child_fixed_arc`` of the micro
  space: ``normal`` and ``reduce`` are ``4 * B`` space-separated integers."""
  cells = [_ints(normal), _ints(reduce)]
  if len(cells[0]) != len(cells[1]) or len(cells[0]) % 4 or not cells[0]:
    raise base.InvalidArchitectureError(
        "the authors' micro arc has 4 integers per node for each of the two "
        f"cells, got {len(cells[0])} and {len(cells[1])}")
  space = micro_space(len(cells[0]) // 4)
  codes = []
  for cell in cells:
    for x_in, x_op, y_in, y_op in zip(*[iter(cell)] * 4):
      ops = []
      for op in (x_op, y_op):
        if not 0 <= op < len(_AUTHORS_MICRO_OPS):
          raise base.InvalidArchitectureError(
              f"the authors' micro op ids are 0..4, got {op}")
        ops.append(MICRO_OPS.index(_AUTHORS_MICRO_OPS[op]))
      codes += [x_in, y_in, *ops]
  return space, space.validate(codes)


def from_authors_macro(arc: str) -> tuple[base.SearchSpace, "np.ndarray"]:
  """``(space, arch)`` for the authors' macro ``--child_fixed_arc`` (per
  layer: the op id, then one skip bit per earlier layer)."""
  values = _ints(arc)
  n = 0
  while n * (n + 1) // 2 < len(values):
    n += 1
  if n * (n + 1) // 2 != len(values):
    raise base.InvalidArchitectureError(
        f"a macro arc of L layers has L(L+1)/2 integers; {len(values)} is "
        "not such a number")
  space = macro_space(n)
  codes = list(values)
  pos = 0
  for i in range(n):
    op = codes[pos]
    if not 0 <= op < len(_AUTHORS_MACRO_OPS):
      raise base.InvalidArchitectureError(
          f"layer {i}: the authors' macro op ids are 0..5, got {op}")
    codes[pos] = MACRO_OPS.index(_AUTHORS_MACRO_OPS[op])
    pos += 1 + i
  return space, space.validate(codes)


# scripts/cifar10_micro_final.sh: the cells of the paper's Figure 7 (3.54 %
# test error, 2.89 % with cutout, 4.6M parameters at N = 5, F = 36).
ENAS_MICRO_PAPER = ("0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1",
                    "1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1")
# scripts/cifar10_macro_final.sh: the 24-layer network of Figure 5 (4.23 %
# at 21.3M parameters with 96 filters in the paper's Table 2 row "ENAS +
# macro search space"; the authors' script uses only the four conv ops).
ENAS_MACRO_PAPER = " ".join([
    "0", "3 0", "0 1 0", "2 0 0 1", "2 0 0 0 0", "3 1 1 0 1 0",
    "2 0 0 0 0 0 1", "2 0 1 1 0 1 1 1", "1 0 1 1 1 0 1 0 1",
    "0 0 0 0 0 0 0 0 0 0", "2 0 0 0 0 0 1 0 0 0 0",
    "0 1 0 0 1 1 0 0 0 0 1 1", "2 0 1 0 0 0 0 0 1 0 1 1 0",
    "1 0 0 1 0 0 0 1 1 1 0 1 0 1", "0 1 1 0 1 0 1 0 0 0 0 0 1 0 0",
    "2 0 0 1 0 0 0 0 0 0 0 1 0 1 0 1",
    "2 0 1 0 0 0 1 0 0 1 1 1 1 0 0 1 0",
    "2 0 0 0 0 1 0 1 0 1 0 0 1 0 1 0 0 1",
    "3 0 1 1 0 1 0 0 0 0 0 1 0 1 0 1 0 0 0",
    "3 0 1 1 0 0 0 0 0 0 0 0 0 1 1 0 0 0 0 1",
    "0 1 0 0 1 0 1 1 0 0 0 1 0 0 0 0 0 1 1 0 0",
    "3 0 1 0 1 1 0 0 1 0 1 1 0 1 1 0 1 0 0 1 0 0",
    "0 1 0 1 0 1 0 0 0 0 0 0 0 0 1 0 1 0 0 1 0 0 0",
    "0 1 1 0 0 0 1 1 1 0 1 0 0 0 1 0 1 0 0 1 1 0 0 0"])


def named(name: str) -> tuple[base.SearchSpace, "np.ndarray"]:
  """A published architecture by name: ``"enas_micro_paper"`` or
  ``"enas_macro_paper"``; returns ``(space, arch)``."""
  if name == "enas_micro_paper":
    return from_authors_micro(*ENAS_MICRO_PAPER)
  if name == "enas_macro_paper":
    return from_authors_macro(ENAS_MACRO_PAPER)
  raise base.InvalidArchitectureError(
      f"unknown named architecture {name!r}; known: {', '.join(NAMED)}")


NAMED = ("enas_micro_paper", "enas_macro_paper")
