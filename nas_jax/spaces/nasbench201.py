"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020, Sec. 2.1).

A cell is a DAG of 4 nodes; each of its 6 edges ``j -> i`` (``j < i``) carries
one of 5 ops, so the space holds ``5**6 = 15,625`` cells. Edge order follows
the benchmark's string notation::

    |op~0|+|op~0|op~1|+|op~0|op~1|op~2|
     node1  node2        node3

i.e. decisions ``(1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2)``.
"""

from __future__ import annotations

import numpy as np

from nas_jax.spaces import base

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from)


class NasBench201Space(base.SearchSpace):
  """The space, with the benchmark's ``|op~i|+...|`` string as its text form."""

  def __init__(self):
    decisions = [
        base.Decision(name=f"edge_{j}_to_{i}", choices=OPS, group="nb201_op")
        for i, j in EDGES
    ]
    super().__init__("nasbench201", decisions)

  def to_text(self, arch) -> str:
    a = self.validate(arch)
    nodes = []
    for node in (1, 2, 3):
      ops = [f"{OPS[a[t]]}~{j}" for t, (i, j) in enumerate(EDGES) if i == node]
      nodes.append("|" + "|".join(ops) + "|")
    return "+".join(nodes)

  def from_text(self, text: str) -> np.ndarray:
    text = text.strip()
    nodes = text.split("+")
    usage = ("expected the NAS-Bench-201 form "
             "'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' with ops from "
             + ", ".join(OPS))
    if len(nodes) != 3:
      raise base.InvalidArchitectureError(
          f"cannot parse {text!r}: {len(nodes)} nodes, {usage}")
    values = []
    for node, part in enumerate(nodes, start=1):
      if not (part.startswith("|") and part.endswith("|")):
        raise base.InvalidArchitectureError(
            f"cannot parse node {node} {part!r} of {text!r}: {usage}")
      edges = part[1:-1].split("|")
      if len(edges) != node:
        raise base.InvalidArchitectureError(
            f"node {node} of {text!r} has {len(edges)} inputs, needs {node}; "
            + usage)
      for j, edge in enumerate(edges):
        op, _, src = edge.partition("~")
        if op not in OPS:
          raise base.InvalidArchitectureError(
              f"unknown op {op!r} on edge {j}->{node} of {text!r}; allowed: "
              + ", ".join(OPS))
        if src != str(j):
          raise base.InvalidArchitectureError(
              f"edge {edge!r} of node {node} in {text!r} should come from "
              f"node {j} ('{op}~{j}')")
        values.append(OPS.index(op))
    return self.validate(values)


def space() -> NasBench201Space:
  return NasBench201Space()
