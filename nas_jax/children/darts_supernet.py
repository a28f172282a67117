"""DARTS supernets (Liu et al., "DARTS: Differentiable Architecture Search",
ICLR 2019, Sec. 2.1-2.2): every edge of a cell is a mixed op, the
softmax(alpha)-weighted sum of all its candidate ops (Eq. 2)::

    o_bar(x) = sum_k softmax(alpha)_k * o_k(x)

and every node sums its incoming edges (Eq. 1, seed 004 Eq. 1.5). The
architecture weights ``alpha`` are an *input* of the network (a separate
pytree the bilevel optimiser owns, ``nas_jax.algorithms.darts``); the op
weights are ordinary Flax params::

    net = Nb201Supernet(num_classes=10)
    alpha = init_alpha("nasbench201", key)          # f32[6, 5]
    variables = net.init(key, images, alpha, train=False)
    logits, upd = net.apply(variables, images, alpha, train=True,
                            mutable=["batch_stats"])

Two cells:

* :class:`Nb201Supernet`: the NAS-Bench-201 cell (Dong & Yang, ICLR 2020,
  Sec. 2.1): 4 nodes, 6 edges ``j -> i``, the 5 ops of
  ``nas_jax.spaces.nasbench201.OPS`` (``none`` is the zero op). A stem, then
  ``num_reductions + 1`` stages of ``num_cells`` cells with a 2x2 max pool
  between stages (CPU-sized; the benchmark's residual reduction blocks are
  not searched, so a pool stands in for them).
* :class:`MicroSupernet`: the ENAS micro cell (``enas_micro``; the DARTS
  cell with ENAS's ops): two cell inputs and ``num_nodes`` nodes; node ``i``
  sums mixed ops over *all* ``2 + i`` earlier states, and the cell output is
  a 1x1 projection of all intermediate nodes (DARTS concatenates them; the
  1x1 conv of a concatenation is a sum of per-node 1x1 convs, as in
  ``enas_cnn.MicroCell``). Inputs are calibrated and reduction cells laid
  out as in ``enas_cnn.MicroNet``, whose modules are reused.

The ops are those of ``nas_jax.children.ops`` (ReLU-conv-BN, pools,
identity); the space's names map to them through :data:`OP_NAMES`. The zero
op has no module: it contributes nothing to the sum, so it is skipped, yet
its alpha still takes part in the softmax (it scales the other ops down).
Note DARTS's own search code gives pooling a BN without affine weights; we
use the ops exactly as the stand-alone children do.

:func:`derive` turns alpha into an architecture of the space (Sec. 2.4).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.children import cell_net
from nas_jax.children import conv as conv_lib
from nas_jax.children import enas_cnn
from nas_jax.children import ops as ops_lib
from nas_jax.spaces import enas as enas_space
from nas_jax.spaces import nasbench201

ZERO = "none"
# A space's op name -> the name in ops.OPS (None: the zero op).
OP_NAMES = {
    ZERO: None,
    "skip_connect": "identity",
    "nor_conv_1x1": "conv_1x1",
    "nor_conv_3x3": "conv_3x3",
    **{name: name for name in ops_lib.OPS},
}
SPACES = ("nasbench201", "enas_micro")


class MixedOp(nn.Module):
  """``sum_k weights[k] * op_k(x)`` over the candidate ops (DARTS Eq. 2).

  Attributes:
    names: the candidate op names (the space's, keys of :data:`OP_NAMES`),
      in the order of ``weights``.
    channels: input and output channels.

  The modules of the non-zero ops are ``ops_0, ops_1, ...`` in that order
  (the zero op has none), so ``ops_j`` is the ``j``-th *non-zero* candidate.
  """

  names: tuple[str, ...]
  channels: int

  def setup(self):
    for n in self.names:
      if n not in OP_NAMES:
        raise ValueError(f"unknown op {n!r}; known: {', '.join(OP_NAMES)}")
    self.live = tuple(k for k, n in enumerate(self.names)
                      if OP_NAMES[n] is not None)
    self.ops = [ops_lib.make_op(OP_NAMES[self.names[k]], self.channels)
                for k in self.live]

  def __call__(self, x: jax.Array, weights: jax.Array,
               train: bool) -> jax.Array:
    """``x [B, H, W, C], weights f32[K] -> [B, H, W, C]``."""
    if weights.shape != (len(self.names),):
      raise ValueError(f"MixedOp over {len(self.names)} ops got weights of "
                       f"shape {weights.shape}")
    out = jnp.zeros_like(x)
    for k, op in zip(self.live, self.ops):
      out = out + weights[k] * op(x, train)
    return out


# -- NAS-Bench-201 cell --------------------------------------------------------


class Nb201Cell(nn.Module):
  """The NAS-Bench-201 cell with a mixed op on each of its 6 edges.

  ``weights f32[6, 5]`` are the softmaxed alphas, edges in the order of
  ``nasbench201.EDGES``; the output is node 3.
  """

  channels: int

  @nn.compact
  def __call__(self, x: jax.Array, weights: jax.Array,
               train: bool) -> jax.Array:
    nodes = [x]
    for i in (1, 2, 3):
      node = 0.0
      for t, (to, frm) in enumerate(nasbench201.EDGES):
        if to == i:
          node = node + MixedOp(nasbench201.OPS, self.channels,
                                name=f"edge_{frm}_to_{to}")(
                                    nodes[frm], weights[t], train)
      nodes.append(node)
    return nodes[3]


class Nb201Supernet(nn.Module):
  """``images [B, H, W, C], alpha f32[6, 5] -> logits [B, num_classes]``.

  Attributes:
    num_classes: classifier outputs.
    channels: width of the stem and of every cell.
    num_cells: cells per stage (NAS-Bench-201: 5).
    num_reductions: 2x2 max pools between stages (NAS-Bench-201: 2).
  """

  num_classes: int = 10
  channels: int = 16
  num_cells: int = 1
  num_reductions: int = 1

  @nn.compact
  def __call__(self, images: jax.Array, alpha: jax.Array,
               train: bool) -> jax.Array:
    shape = (len(nasbench201.EDGES), len(nasbench201.OPS))
    if alpha.shape != shape:
      raise ValueError(f"{type(self).__name__} expects alpha of shape "
                       f"{shape}, got {alpha.shape}")
    enas_cnn.check_image_size(images.shape[1:3], self.num_reductions,
                              type(self).__name__)
    weights = jax.nn.softmax(alpha, axis=-1)  # [6, 5]
    x = ops_lib.Stem(self.channels)(images, train)  # [B, H, W, C]
    for stage in range(self.num_reductions + 1):
      if stage:
        x = cell_net._reduce(x)  # pylint: disable=protected-access
      for c in range(self.num_cells):
        x = Nb201Cell(self.channels, name=f"stage{stage}_cell{c}")(
            x, weights, train)
    return ops_lib.Classifier(self.num_classes)(x)


# -- ENAS micro cell -----------------------------------------------------------


def micro_num_edges(num_nodes: int) -> int:
  """Edges of a two-input cell whose node ``i`` reads all ``2 + i`` states."""
  return sum(2 + i for i in range(num_nodes))


def micro_edges(num_nodes: int) -> list[tuple[int, int]]:
  """``(node, source slot)`` of every edge, in alpha's row order; slot 0 and
  1 are the cell inputs, slot ``2 + j`` node ``j``."""
  return [(i, s) for i in range(num_nodes) for s in range(2 + i)]


class MicroMixedCell(nn.Module):
  """A DARTS cell over the ENAS micro ops; ``weights f32[E, 5]``."""

  num_nodes: int
  channels: int

  @nn.compact
  def __call__(self, h_prev: jax.Array, h: jax.Array, weights: jax.Array,
               train: bool) -> jax.Array:
    C = self.channels
    # The same input calibration as enas_cnn.MicroCell.
    if h_prev.shape[1] != h.shape[1]:
      h_prev = enas_cnn.FactorizedReduce(C, name="calibrate_prev")(h_prev,
                                                                    train)
    else:
      h_prev = enas_cnn.ReLUConv1x1BN(C, name="calibrate_prev")(h_prev, train)
    h = enas_cnn.ReLUConv1x1BN(C, name="calibrate")(h, train)
    states = [h_prev, h]
    for e, (i, s) in enumerate(micro_edges(self.num_nodes)):
      if s == 0:
        states.append(0.0)
      states[2 + i] = states[2 + i] + MixedOp(
          enas_space.MICRO_OPS, C, name=f"node{i}_from{s}")(
              states[s], weights[e], train)
    out = sum(conv_lib.Conv(C, (1, 1), name=f"out{j}")(
        nn.relu(states[2 + j])) for j in range(self.num_nodes))
    return ops_lib._batch_norm(train, name="out_bn")(out)  # pylint: disable=protected-access


class MicroSupernet(nn.Module):
  """``images, alpha {"normal": f32[E, 5], "reduce": f32[E, 5]} -> logits``.

  The stem and stage layout of ``enas_cnn.MicroNet`` (a reduction cell,
  after a factorized reduction of its input, between stages; channels
  double at each reduction).
  """

  num_classes: int = 10
  num_nodes: int = 2
  num_cells: int = 1
  channels: int = 8
  num_reductions: int = 1
  stem_multiplier: int = 1

  @nn.compact
  def __call__(self, images: jax.Array, alpha: Any,
               train: bool) -> jax.Array:
    shape = (micro_num_edges(self.num_nodes), len(enas_space.MICRO_OPS))
    for kind in ("normal", "reduce"):
      if alpha[kind].shape != shape:
        raise ValueError(f"{type(self).__name__} expects alpha[{kind!r}] of "
                         f"shape {shape}, got {alpha[kind].shape}")
    enas_cnn.check_image_size(images.shape[1:3], self.num_reductions,
                              type(self).__name__)
    w_normal = jax.nn.softmax(alpha["normal"], axis=-1)
    w_reduce = jax.nn.softmax(alpha["reduce"], axis=-1)
    x = conv_lib.Conv(self.stem_multiplier * self.channels, (3, 3),
                      name="stem_conv")(images)
    x = ops_lib._batch_norm(train, name="stem_bn")(x)  # pylint: disable=protected-access
    h_prev, h = x, x
    C, index = self.channels, 0
    for stage in range(self.num_reductions + 1):
      if stage > 0:
        C *= 2
        reduced = enas_cnn.FactorizedReduce(C, name=f"reduce{stage}_input")(
            h, train)
        h_prev, h = h, reduced
        h_prev, h = h, MicroMixedCell(self.num_nodes, C,
                                      name=f"cell{index}_reduce")(
                                          h_prev, h, w_reduce, train)
        index += 1
      for _ in range(self.num_cells):
        h_prev, h = h, MicroMixedCell(self.num_nodes, C,
                                      name=f"cell{index}")(
                                          h_prev, h, w_normal, train)
        index += 1
    x = jnp.mean(nn.relu(h), axis=(1, 2))  # [B, C]
    return nn.Dense(self.num_classes, name="classifier")(x)


# -- alpha and derivation ------------------------------------------------------


def init_alpha(space_name: str, key: jax.Array, *, num_nodes: int = 2,
               scale: float = 1e-3) -> Any:
  """Small random alphas (DARTS: ``1e-3 * randn``), so the initial mixture
  is near uniform but ties are broken."""
  if space_name == "nasbench201":
    shape = (len(nasbench201.EDGES), len(nasbench201.OPS))
    return scale * jax.random.normal(key, shape, jnp.float32)
  if space_name == "enas_micro":
    shape = (micro_num_edges(num_nodes), len(enas_space.MICRO_OPS))
    k1, k2 = jax.random.split(key)
    return {"normal": scale * jax.random.normal(k1, shape, jnp.float32),
            "reduce": scale * jax.random.normal(k2, shape, jnp.float32)}
  raise ValueError(f"no DARTS supernet for space {space_name!r}; known: "
                   f"{', '.join(SPACES)}")


def make_network(space_name: str, **kwargs: Any) -> nn.Module:
  """The supernet for ``space_name`` (``nasbench201`` or ``enas_micro``)."""
  nets = {"nasbench201": Nb201Supernet, "enas_micro": MicroSupernet}
  if space_name not in nets:
    raise ValueError(f"no DARTS supernet for space {space_name!r}; known: "
                     f"{', '.join(SPACES)}")
  return nets[space_name](**kwargs)


def _best_ops(alpha: np.ndarray, names: tuple[str, ...]
              ) -> tuple[np.ndarray, np.ndarray]:
  """Per edge: the strongest non-zero op and its softmax weight."""
  w = np.asarray(jax.nn.softmax(jnp.asarray(alpha, jnp.float32), axis=-1))
  w = np.where(np.array([n == ZERO for n in names])[None, :], -np.inf, w)
  best = np.argmax(w, axis=-1)  # ties: the first op
  return best.astype(np.int32), np.take_along_axis(w, best[:, None], 1)[:, 0]


def derive_nb201(alpha: Any) -> np.ndarray:
  """``alpha f32[6, 5] -> int32[6]``: on every edge the op with the largest
  alpha other than ``none`` (Liu et al. 2019, Sec. 2.4: "zero operations
  are excluded"). The NAS-Bench-201 cell keeps all 6 edges, so no top-k
  edge selection is needed; a ``none`` edge can therefore never be derived
  (the argmax is monotone in softmax, so alphas and weights agree)."""
  alpha = np.asarray(alpha, np.float32)
  return _best_ops(alpha, nasbench201.OPS)[0]


def derive_micro_cell(alpha: Any, num_nodes: int) -> np.ndarray:
  """One micro cell's ``alpha f32[E, 5]`` -> ENAS codes ``int32[4 N]`` (per
  node ``input_a, input_b, op_a, op_b``).

  DARTS Sec. 2.4: every node keeps its top-2 incoming edges, ranked by
  their strongest non-zero op's softmax weight, each with that op. Ties go
  to the earlier source. ``input_a`` is the stronger edge.
  """
  alpha = np.asarray(alpha, np.float32)
  ops, strength = _best_ops(alpha, enas_space.MICRO_OPS)
  edges = micro_edges(num_nodes)
  codes = []
  for i in range(num_nodes):
    rows = [e for e, (node, _) in enumerate(edges) if node == i]
    # Stable sort on -strength: equal strengths keep source order.
    top = sorted(rows, key=lambda e: -strength[e])[:2]
    codes += [edges[top[0]][1], edges[top[1]][1], ops[top[0]], ops[top[1]]]
  return np.asarray(codes, np.int32)


def derive(space_name: str, alpha: Any, *, num_nodes: int = 2) -> np.ndarray:
  """The discrete architecture (an ``int32`` code of the space) of alpha."""
  if space_name == "nasbench201":
    return derive_nb201(alpha)
  if space_name == "enas_micro":
    return np.concatenate([derive_micro_cell(alpha["normal"], num_nodes),
                           derive_micro_cell(alpha["reduce"], num_nodes)])
  raise ValueError(f"no DARTS supernet for space {space_name!r}; known: "
                   f"{', '.join(SPACES)}")
