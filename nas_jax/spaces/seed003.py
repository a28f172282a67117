"""The search spaces of Arora & Krone, "Learning to Design CNNs with
Reinforcement Learning" (Columbia University; seed 003).

A child CNN repeats one *cell*; the PPO-trained controller designs the cell
from eight operations:

* :func:`small_space`: "2 operations applied consecutively define a cell",
  so ``8 * 8 = 64`` children (the study precomputes all their MNIST rewards).
* :func:`large_space`: "cells allow skip-connections and branching (multiple
  operations applied to the same input)". The slides give no exact layout; we
  use the ENAS recurrent-cell pattern (Pham et al. 2018, Sec. 2.1): node ``i``
  picks one earlier tensor (the cell input or node ``0..i-1``) and an op, and
  the cell output is the mean of the loose ends. Three nodes give
  ``(1 * 8) * (2 * 8) * (3 * 8) = 3,072`` children ("thousands").

Both spaces have a readable text form (op names, not indices) with a full
round trip; the base class's comma-separated indices are accepted on input
too, so either notation can be passed to a retrain binary.
"""

from __future__ import annotations

import re

import numpy as np

from nas_jax.spaces import base

# The slides' operation list, in their order (the index is the code).
OPS = ("conv_1x3_3x1", "conv_3x3", "sep_conv_3x3", "conv_5x5", "conv_7x7",
       "max_pool_2x2", "avg_pool_2x2", "identity")
OP_GROUP = "seed003_op"

# Text notation.
_THEN = ">"  # Small space: "op1>op2", x -> op1 -> op2.
_NODE_SEP = ";"  # Large space: "x>op;n0>op;x>op", one "source>op" per node.
_CELL_INPUT = "x"
_INDEX_TEXT = re.compile(r"^\s*-?\d+(\s*,\s*-?\d+)*\s*$")


def _op_value(op: str, where: str, text: str) -> int:
  if op not in OPS:
    raise base.InvalidArchitectureError(
        f"unknown op {op!r} in {where} of {text!r}; allowed: "
        + ", ".join(OPS))
  return OPS.index(op)


class SmallSpace(base.SearchSpace):
  """The 64-child space: ``op1`` then ``op2``.

  Text form: the two op names joined by ``>``, e.g.
  ``"conv_5x5>conv_1x3_3x1"`` (x -> conv_5x5 -> conv_1x3_3x1).
  """

  def __init__(self):
    super().__init__("seed003_small", [
        base.Decision(name="op1", choices=OPS, group=OP_GROUP),
        base.Decision(name="op2", choices=OPS, group=OP_GROUP),
    ])

  def to_text(self, arch) -> str:
    a = self.validate(arch)
    return _THEN.join(OPS[v] for v in a)

  def from_text(self, text: str) -> np.ndarray:
    if not isinstance(text, str):
      raise base.InvalidArchitectureError(
          f"space {self.name!r}: text must be a str, got {type(text).__name__}")
    if _INDEX_TEXT.match(text):
      return super().from_text(text)
    parts = [p.strip() for p in text.strip().split(_THEN)]
    if len(parts) != 2:
      raise base.InvalidArchitectureError(
          f"space {self.name!r}: cannot parse {text!r}; expected two ops "
          f"joined by {_THEN!r}, e.g. 'conv_5x5>conv_1x3_3x1', or the "
          "indices '3,0'")
    return self.validate([
        _op_value(op, f"op{k + 1}", text) for k, op in enumerate(parts)])


class LargeSpace(base.SearchSpace):
  """Cells with skip connections and branching (see the module docstring).

  Node ``i`` has two decisions: ``node{i}/input``, a pointer over anchor
  slots ``0..i`` (slot 0 is the cell input, slot ``j + 1`` is node ``j``), and
  ``node{i}/op``, which completes the node and writes slot ``i + 1``.

  Text form: one ``source>op`` per node, joined by ``;``, where ``source`` is
  ``x`` (the cell input) or ``n{j}`` (node ``j``); e.g.
  ``"x>conv_3x3;n0>sep_conv_3x3;x>identity"``.
  """

  def __init__(self, num_nodes: int):
    if (not isinstance(num_nodes, int) or isinstance(num_nodes, bool)
        or num_nodes < 1):
      raise ValueError(f"num_nodes must be a positive int, got {num_nodes!r}")
    self.num_nodes = num_nodes
    decisions = []
    for i in range(num_nodes):
      decisions.append(base.Decision(
          name=f"node{i}/input", kind=base.POINTER, num_inputs=i + 1,
          anchor_base=0))
      decisions.append(base.Decision(
          name=f"node{i}/op", choices=OPS, group=OP_GROUP, anchor=i + 1))
    super().__init__("seed003_large", decisions, init_anchors=(0,))

  def to_text(self, arch) -> str:
    a = self.validate(arch)
    nodes = []
    for i in range(self.num_nodes):
      src, op = int(a[2 * i]), int(a[2 * i + 1])
      nodes.append(f"{_CELL_INPUT if src == 0 else f'n{src - 1}'}"
                   f"{_THEN}{OPS[op]}")
    return _NODE_SEP.join(nodes)

  def from_text(self, text: str) -> np.ndarray:
    if not isinstance(text, str):
      raise base.InvalidArchitectureError(
          f"space {self.name!r}: text must be a str, got {type(text).__name__}")
    if _INDEX_TEXT.match(text):
      return super().from_text(text)
    usage = (f"expected {self.num_nodes} nodes 'source>op' joined by "
             f"{_NODE_SEP!r}, source 'x' (cell input) or 'n<j>' (an earlier "
             "node), e.g. 'x>conv_3x3;n0>sep_conv_3x3;x>identity'")
    nodes = [p.strip() for p in text.strip().split(_NODE_SEP)]
    if len(nodes) != self.num_nodes:
      raise base.InvalidArchitectureError(
          f"space {self.name!r}: cannot parse {text!r}: {len(nodes)} nodes; "
          + usage)
    values = []
    for i, node in enumerate(nodes):
      src, sep, op = (s.strip() for s in node.partition(_THEN))
      if not sep:
        raise base.InvalidArchitectureError(
            f"space {self.name!r}: cannot parse node {i} {node!r} of "
            f"{text!r}; " + usage)
      if src == _CELL_INPUT:
        slot = 0
      elif re.fullmatch(r"n\d+", src):
        j = int(src[1:])
        if j >= i:
          raise base.InvalidArchitectureError(
              f"space {self.name!r}: node {i} of {text!r} reads {src!r}, but "
              f"node {i} may only read x or n0..n{i - 1}"
              if i else
              f"space {self.name!r}: node 0 of {text!r} reads {src!r}, but "
              "node 0 may only read x (the cell input)")
        slot = j + 1
      else:
        raise base.InvalidArchitectureError(
            f"space {self.name!r}: unknown source {src!r} in node {i} of "
            f"{text!r}; " + usage)
      values += [slot, _op_value(op, f"node {i}", text)]
    return self.validate(values)


def small_space() -> SmallSpace:
  """The 64-child space: two ops applied consecutively (Arora & Krone)."""
  return SmallSpace()


def large_space(num_nodes: int = 3) -> LargeSpace:
  """The branching space (Arora & Krone); ``num_nodes=3`` gives 3,072 cells.

  Args:
    num_nodes: nodes per cell.

  Returns:
    A space of ``2 * num_nodes`` decisions, ``(input, op)`` per node.
  """
  return LargeSpace(num_nodes)
