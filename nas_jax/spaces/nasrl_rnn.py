"""The NAS-RL recurrent cell space: a tree (Zoph & Le, "Neural Architecture
Search with Reinforcement Learning", ICLR 2017, Sec. 3.4 and Fig. 5).

The cell maps ``(x_t, h_{t-1}, c_{t-1})`` to ``(h_t, c_t)`` through a full
binary tree with ``base`` leaves (the paper's "base 2" worked example and its
"base 8" Penn Treebank search). Tree nodes are numbered leaves first, then
level by level (base 2: leaves 0, 1, root 2; base 8: leaves 0-7, then 8-11,
12-13, root 14); internal node ``base + k`` combines the ``2k``-th and
``2k+1``-th nodes of the level below. The controller predicts, in order:

1. for every tree node, a combination (``add`` or ``elem_mult``) and an
   activation (``tanh``, ``relu``, ``sigmoid``, ``identity``). A leaf ``k``
   combines ``W_{2k+1} x_t`` and ``W_{2k+2} h_{t-1}``; an internal node
   combines its two children's outputs, with no parameters;
2. the "cell inject": a combination and an activation that merge
   ``c_{t-1}`` into a tree node's output, ``a_m^new = act(a_m (+|*) c_{t-1})``;
3. the "cell index": first the node whose output *before its activation*
   becomes ``c_t``, then the node ``m`` that receives ``c_{t-1}``.

``h_t`` is the root's output. Every decision has its own softmax (NAS-RL),
so no decision shares a ``group``. ``formulas(arch)`` writes the cell as
the paper does; the worked example of the seeds decodes to its exact text
(``tests/test_nasrl_rnn.py``).
"""

from __future__ import annotations

import numpy as np

from nas_jax.spaces import base

COMBINE = ("add", "elem_mult")
ACTIVATIONS = ("tanh", "relu", "sigmoid", "identity")
BASES = (2, 4, 8)


def num_nodes(base_: int) -> int:
  return 2 * base_ - 1


def children(base_: int) -> list[tuple[int, int]]:
  """``[(left, right)]`` of every internal node, in node order."""
  out, level, nxt = [], list(range(base_)), base_
  while len(level) > 1:
    new = []
    for k in range(0, len(level), 2):
      out.append((level[k], level[k + 1]))
      new.append(nxt)
      nxt += 1
    level = new
  return out


class TreeCellSpace(base.SearchSpace):
  """The tree space for one base; see the module docstring.

  Text form: ``comb:act`` per node joined by ``,``, then
  ``|inject=comb:act|cell=C,M`` (``c_t`` from node C, ``c_{t-1}`` into
  node M), e.g. the worked example
  ``add:tanh,elem_mult:relu,elem_mult:sigmoid|inject=add:relu|cell=1,0``.
  """

  def __init__(self, base_: int):
    if base_ not in BASES:
      raise ValueError(f"base must be one of {BASES} (a full binary tree), "
                       f"got {base_!r}")
    self.base = base_
    self.num_tree_nodes = num_nodes(base_)
    self.children = children(base_)
    decisions = []
    for k in range(self.num_tree_nodes):
      decisions += [base.Decision(f"node{k}/combine", choices=COMBINE),
                    base.Decision(f"node{k}/act", choices=ACTIVATIONS)]
    node_labels = tuple(str(k) for k in range(self.num_tree_nodes))
    decisions += [base.Decision("inject/combine", choices=COMBINE),
                  base.Decision("inject/act", choices=ACTIVATIONS),
                  base.Decision("cell_index/c_out", choices=node_labels),
                  base.Decision("cell_index/inject_at", choices=node_labels)]
    super().__init__(f"nasrl_rnn_base{base_}", decisions)

  # -- decoding ---------------------------------------------------------------

  def decode(self, arch) -> dict:
    """``{"combine": [M], "act": [M], "inject": (comb, act), "c_out": int,
    "inject_at": int}`` with labels, after validation."""
    a = self.validate(arch)
    m = self.num_tree_nodes
    return {"combine": [COMBINE[v] for v in a[0:2 * m:2]],
            "act": [ACTIVATIONS[v] for v in a[1:2 * m:2]],
            "inject": (COMBINE[a[2 * m]], ACTIVATIONS[a[2 * m + 1]]),
            "c_out": int(a[2 * m + 2]), "inject_at": int(a[2 * m + 3])}

  def formulas(self, arch) -> list[str]:
    """The cell as the paper writes it (Sec. 3.4), one line per tree node,
    the inject, ``h_t`` and ``c_t``."""
    d = self.decode(arch)
    pre, lines, name = {}, [], {}
    for k in range(self.num_tree_nodes):
      if k < self.base:
        x, h = f"W_{2 * k + 1} * x_t", f"W_{2 * k + 2} * h_{{t-1}}"
        pre[k] = (f"{x} + {h}" if d["combine"][k] == "add"
                  else f"({x}) * ({h})")
      else:
        l, r = self.children[k - self.base]
        op = " + " if d["combine"][k] == "add" else " * "
        pre[k] = name[l] + op + name[r]
      lines.append(f"a_{k} = {_apply(d['act'][k], pre[k])}")
      name[k] = f"a_{k}"
      if k == d["inject_at"]:
        comb, act = d["inject"]
        op = " + " if comb == "add" else " * "
        lines.append(f"a_{k}_new = {_apply(act, f'a_{k}{op}c_{{t-1}}')}")
        name[k] = f"a_{k}_new"
    lines.append(f"h_t = {name[self.num_tree_nodes - 1]}")
    lines.append(f"c_t = {pre[d['c_out']]}")
    return lines

  # -- text -------------------------------------------------------------------

  def to_text(self, arch) -> str:
    d = self.decode(arch)
    nodes = ",".join(f"{c}:{a}" for c, a in zip(d["combine"], d["act"]))
    return (f"{nodes}|inject={d['inject'][0]}:{d['inject'][1]}"
            f"|cell={d['c_out']},{d['inject_at']}")

  def from_text(self, text: str) -> np.ndarray:
    m = self.num_tree_nodes
    hint = ("expected 'comb:act,...|inject=comb:act|cell=C,M' with "
            f"{m} nodes, comb in {COMBINE}, act in {ACTIVATIONS}")
    parts = text.strip().split("|")
    if (len(parts) != 3 or not parts[1].startswith("inject=")
        or not parts[2].startswith("cell=")):
      raise base.InvalidArchitectureError(
          f"space {self.name!r}: cannot parse {text!r}; {hint}")
    nodes = parts[0].split(",")
    if len(nodes) != m:
      raise base.InvalidArchitectureError(
          f"space {self.name!r}: {len(nodes)} tree nodes in {text!r}, a "
          f"base-{self.base} tree has {m}; {hint}")
    labels = []
    for item in nodes + [parts[1][len("inject="):]]:
      comb, sep, act = item.partition(":")
      if not sep:
        raise base.InvalidArchitectureError(
            f"space {self.name!r}: {item!r} is not 'comb:act'; {hint}")
      labels += [comb.strip(), act.strip()]
    cell = parts[2][len("cell="):].split(",")
    if len(cell) != 2:
      raise base.InvalidArchitectureError(
          f"space {self.name!r}: cell index {parts[2]!r} needs two nodes "
          f"'cell=C,M'; {hint}")
    labels += [c.strip() for c in cell]
    return self.validate([d.value(v) for d, v in zip(self.decisions, labels)])


def _apply(act: str, expr: str) -> str:
  return expr if act == "identity" else f"{act}({expr})"


def space(base: int = 8) -> TreeCellSpace:  # noqa: A002 (paper's word)
  """The NAS-RL tree cell space with ``base`` leaves (2 or 8 in the paper)."""
  return TreeCellSpace(base)


# The seeds' worked example (Zoph & Le 2017, Fig. 5), base 2.
WORKED_EXAMPLE = ("add:tanh,elem_mult:relu,elem_mult:sigmoid"
                  "|inject=add:relu|cell=1,0")
