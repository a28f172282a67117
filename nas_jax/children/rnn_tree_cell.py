"""The NAS-RL tree-structured recurrent cell built from its architecture
array (Zoph & Le 2017, Sec. 3.4; the space is ``spaces.nasrl_rnn``).

All ``base`` leaves are computed by two matmuls (``x_t`` and ``h_{t-1}``
against ``[*, base * H]`` weights), then every node's combination and
activation and the cell inject are selected by index from the architecture,
so ONE compiled program serves every tree of a base. Carry: ``(h, c)``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_jax.children import enas_rnn
from nas_jax.spaces import nasrl_rnn

_ACTS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid,
         "identity": lambda x: x}


def _act(index, x):
  return jnp.stack([_ACTS[a](x) for a in nasrl_rnn.ACTIVATIONS])[index]


def _combine(index, a, b):
  # COMBINE = ("add", "elem_mult")
  return jnp.where(index == 0, a + b, a * b)


class TreeCell(nn.Module):
  """A tree cell of ``base`` leaves; ``arch`` is an input (``int32[4*base+2]``).

  Attributes:
    hidden_size: ``H``.
    base: leaves of the tree (2 or 8 in the paper).
  """

  hidden_size: int
  base: int = 8

  def zero_carry(self, batch_size: int):
    z = jnp.zeros((batch_size, self.hidden_size))
    return (z, z)

  @nn.compact
  def __call__(self, xs, carry, arch, x_mask=None, h_mask=None,
               step_mask=None):
    """``xs [B, T, E]``, carry ``(h, c)`` -> ``(ys [B, T, H], (h, c))``;
    masks as in ``enas_rnn.ENASCell``."""
    H, L = self.hidden_size, self.base
    M = nasrl_rnn.num_nodes(L)
    kids = nasrl_rnn.children(L)
    B, T, E = xs.shape
    init = enas_rnn.uniform_init(enas_rnn.init_range(H))
    # Leaf k uses columns k*H:(k+1)*H: the paper's W_{2k+1} (x) and
    # W_{2k+2} (h).
    wx = self.param("w_x", init, (E, L * H))
    wh = self.param("w_h", init, (H, L * H))
    arch = jnp.asarray(arch, jnp.int32)
    comb, act = arch[0:2 * M:2], arch[1:2 * M:2]
    inj_comb, inj_act = arch[2 * M], arch[2 * M + 1]
    c_out, inject_at = arch[2 * M + 2], arch[2 * M + 3]
    x_mask = jnp.ones((B, E)) if x_mask is None else x_mask
    h_mask = jnp.ones((B, H)) if h_mask is None else h_mask
    step_mask = jnp.ones((T,)) if step_mask is None else step_mask
    zx = jnp.einsum("bte,ef->btf", xs * x_mask[:, None], wx)  # [B, T, L*H]

    def step(carry, inp):
      h, c = carry
      zx_t, m_t = inp
      zh = ((h * h_mask) @ wh).reshape(B, L, H)
      zx_l = zx_t.reshape(B, L, H)
      outs, pres = [], []
      for k in range(M):
        if k < L:
          pre = _combine(comb[k], zx_l[:, k], zh[:, k])
        else:
          l, r = kids[k - L]
          pre = _combine(comb[k], outs[l], outs[r])
        a = _act(act[k], pre)
        injected = _act(inj_act, _combine(inj_comb, a, c))
        outs.append(jnp.where(inject_at == k, injected, a))
        pres.append(pre)
      c_new = jnp.stack(pres)[c_out]
      h_new = outs[-1]
      keep = m_t > 0
      return (jnp.where(keep, h_new, h), jnp.where(keep, c_new, c)), h_new

    carry, ys = jax.lax.scan(step, carry, (zx.swapaxes(0, 1), step_mask))
    return ys.swapaxes(0, 1), carry
