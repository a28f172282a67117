"""The ENAS recurrent cell with shared weights (Pham et al., ICML 2018, Sec.
2.1 "Designing Recurrent Cells"), as a Flax Linen module.

A cell of ``N`` nodes (``spaces.enas.rnn_space``, arch ``int32[2N - 1]``):

* node 0 reads ``x_t`` and ``h_{t-1}``;
* node ``i >= 1`` reads one earlier node ``j = prev_i``;
* every node is a highway unit, as in the authors' code (melodyguan/enas,
  ``src/ptb/ptb_enas_child.py``)::

    c   = sigmoid(in @ W_c)          # in = [x_t, h_{t-1}] (node 0) or h_j
    h_i = c * act_i(in @ W_h) + (1 - c) * carry   # carry = h_{t-1} or h_j

  with ``act_i`` one of tanh, ReLU, identity, sigmoid (``RNN_ACTIVATIONS``);
* ``h_t`` is the mean of the loose ends (nodes no later node reads).

Weight sharing: one ``(W_c, W_h)`` pair per ``(node i, previous node j)``,
stored as ``w[pair(i, j)]`` of shape ``[H, 2H]``, used by every child that
connects ``j -> i`` (the paper's ``W^{(h)}_{\\ell, j}``). The architecture
is an input array: the selected pairs are gathered once per window, a
node's input is picked with ``lax.select_n`` and its activation with
``lax.switch``, so ONE compiled program serves every cell of the space, as
fast as the cell built statically (benchmarks/README.md).

``fixed_arch`` builds the same cell for one architecture with only its own
``N`` weight pairs and no gathers (the derived cell retrained from scratch,
and the static reference of ``benchmarks/rnn.py``).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.spaces import enas as enas_spaces

_ACTS = (jnp.tanh, jax.nn.relu, lambda x: x, jax.nn.sigmoid)
assert len(_ACTS) == len(enas_spaces.RNN_ACTIVATIONS)


def init_range(hidden_size: int) -> float:
  """The authors' uniform init half-width by width (ptb_enas_child.py)."""
  return 0.1 if hidden_size <= 300 else 0.05 if hidden_size <= 400 else 0.04


def uniform_init(scale: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return init


def num_pairs(num_nodes: int) -> int:
  return num_nodes * (num_nodes - 1) // 2


def pair_index(node: int | jax.Array, prev: int | jax.Array):
  """Row of the shared weight bank for edge ``prev -> node`` (``node >= 1``)."""
  return node * (node - 1) // 2 + prev


def decode(arch) -> tuple:
  """``(acts [N], prevs [N-1], loose [N])`` of an arch (numpy or traced).

  ``loose[j]`` is 1.0 for nodes that no later node reads (their mean is
  ``h_t``); the last node is always loose, so the mean is well defined.
  """
  xp = np if isinstance(arch, np.ndarray) else jnp
  acts = arch[0::2]
  prevs = arch[1::2]
  n = acts.shape[0]
  used = xp.zeros((n,), xp.float32)
  if n > 1:
    used = (prevs[:, None] == xp.arange(n)[None, :]).any(0).astype(xp.float32)
  return acts, prevs, 1.0 - used


def _act(index, x, static: bool):
  if static:
    return _ACTS[int(index)](x)
  # One program for every cell: the activation is a branch picked at run
  # time (faster than computing all four and selecting, benchmarks/rnn.py).
  return jax.lax.switch(index, _ACTS, x)


def _clip_rows(h, max_norm: float):
  """Scales each row of ``h`` to an L2 norm of at most ``max_norm``."""
  norm = jnp.linalg.norm(h, axis=-1, keepdims=True)
  return h * jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))


def _highway(z, carry, act, static):
  c, g = jnp.split(z, 2, axis=-1)
  c = jax.nn.sigmoid(c)
  return carry + c * (_act(act, g, static) - carry)


class ENASCell(nn.Module):
  """The shared-weight ENAS recurrent cell (or one fixed cell).

  Attributes:
    hidden_size: ``H`` (input size must equal it when the LM ties weights).
    num_nodes: ``N`` (12 in the paper's PTB search).
    fixed_arch: if set, an architecture (sequence of ints) to build with its
      own ``N`` weight pairs only; ``arch`` passed to ``__call__`` is ignored.
    unroll: ``lax.scan``'s unroll over time steps. XLA:CPU runs the backward
      of a rolled scan about 2x slower than of an unrolled one (measured in
      benchmarks/rnn.py), at the price of compile time growing with BPTT.
    remat: recompute each time step's nodes in the backward pass instead of
      storing them (``jax.checkpoint``): a [B, H] state per step is kept
      instead of every node's pre-activations, gates and activations, which
      at H = 1000 is about 1 GB per window.
    max_hidden_norm: if set, each row of ``h_t`` is scaled down to this L2
      norm. Cells of ReLU / identity nodes can grow ``h`` without bound over
      a carried state (the authors' search code batch-normalises instead;
      the widely used PyTorch ENAS clips at 25).
  """

  hidden_size: int
  num_nodes: int = 12
  fixed_arch: Sequence[int] | None = None
  unroll: int | bool = 1
  remat: bool = False
  max_hidden_norm: float | None = None

  def zero_carry(self, batch_size: int):
    return jnp.zeros((batch_size, self.hidden_size))

  @nn.compact
  def __call__(self, xs, carry, arch, x_mask=None, h_mask=None,
               step_mask=None):
    """Runs the cell over a window.

    Args:
      xs: ``[B, T, E]`` inputs.
      carry: ``[B, H]`` hidden state ``h_{t-1}``.
      arch: ``int32[2N - 1]`` (ignored with ``fixed_arch``).
      x_mask, h_mask: variational dropout masks ``[B, E]`` / ``[B, H]`` on
        the cell's inputs and on the states its matmuls read, shared over
        time (Gal & Ghahramani 2016; ENAS's x_keep / h_keep), or None.
      step_mask: ``[T]``, 0 at padded steps, whose updates the carry skips.

    Returns:
      ``(ys [B, T, H], carry [B, H])``.
    """
    H, N = self.hidden_size, self.num_nodes
    E = xs.shape[-1]
    init = uniform_init(init_range(H))
    w0 = self.param("w_in", init, (E + H, 2 * H))  # node 0: [x_t, h_{t-1}]
    static = self.fixed_arch is not None
    if static:
      arch = np.asarray(self.fixed_arch, np.int32)
      if arch.shape != (2 * N - 1,):
        raise ValueError(f"fixed_arch must have {2 * N - 1} entries for "
                         f"{N} nodes, got {arch.shape}")
      w = self.param("w_nodes", init, (max(N - 1, 1), H, 2 * H))  # own pairs
      w_sel = w
    else:
      bank = self.param("w_shared", init, (max(num_pairs(N), 1), H, 2 * H))
      arch = jnp.asarray(arch, jnp.int32)
    acts, prevs, loose = decode(arch)
    if not static:
      # The children's weights, gathered once per window: [N-1, H, 2H].
      w_sel = bank[pair_index(jnp.arange(1, N), prevs)] if N > 1 else bank
    loose = loose / loose.sum()  # [N]: averaging weights of loose ends

    B = xs.shape[0]
    x_mask = jnp.ones((B, E)) if x_mask is None else x_mask
    h_mask = jnp.ones((B, H)) if h_mask is None else h_mask
    step_mask = (jnp.ones((xs.shape[1],)) if step_mask is None
                 else step_mask)
    # Node 0's input projection does not depend on the recurrence: one big
    # matmul over the window instead of T small ones.
    zx = jnp.einsum("bte,ef->btf", xs * x_mask[:, None], w0[:E])  # [B,T,2H]
    w0h = w0[E:]
    # One [H, 2H] array per node, split outside the scan: the backward scan
    # accumulates a cotangent per closed-over array, and one stacked
    # [N-1, H, 2H] array would get a zero-padded full-size cotangent from
    # every node at every step (4x slower backward at H = 256).
    w_nodes = [w_sel[i] for i in range(N - 1)]

    def step(h, inp):
      zx_t, m_t = inp
      s = _highway(zx_t + (h * h_mask) @ w0h, h, acts[0], static)
      if static:
        nodes = [s]
        for i in range(1, N):
          src = nodes[int(prevs[i - 1])]
          nodes.append(_highway((src * h_mask) @ w_nodes[i - 1], src,
                                acts[i], static))
        out = sum(float(loose[j]) * nodes[j] for j in range(N)
                  if float(loose[j]) > 0)
      else:
        nodes = [s]
        for i in range(1, N):
          # Node i's input, picked elementwise by the traced index: its
          # backward is a select too, not a scatter into a node buffer.
          src = jax.lax.select_n(prevs[i - 1], *nodes) if i > 1 else s
          nodes.append(_highway((src * h_mask) @ w_nodes[i - 1], src,
                                acts[i], static))
        out = sum(loose[j] * nodes[j] for j in range(N))
      if self.max_hidden_norm:
        out = _clip_rows(out, self.max_hidden_norm)
      h_new = jnp.where(m_t > 0, out, h)
      return h_new, out

    if self.remat:
      step = jax.checkpoint(step, prevent_cse=False)
    carry, ys = jax.lax.scan(step, carry, (zx.swapaxes(0, 1), step_mask),
                             unroll=self.unroll)
    return ys.swapaxes(0, 1), carry


def shared_param_count(num_nodes: int, hidden_size: int,
                       input_size: int | None = None) -> int:
  """Parameters of the shared cell (all pairs), excluding the LM around it."""
  e = hidden_size if input_size is None else input_size
  return (e + hidden_size) * 2 * hidden_size + (
      num_pairs(num_nodes) * hidden_size * 2 * hidden_size)


def child_param_count(num_nodes: int, hidden_size: int,
                      input_size: int | None = None) -> int:
  """Parameters one child uses: node 0's pair plus one pair per node."""
  e = hidden_size if input_size is None else input_size
  return (e + hidden_size) * 2 * hidden_size + (
      (num_nodes - 1) * hidden_size * 2 * hidden_size)
