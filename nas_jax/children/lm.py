"""A word-level language model around any recurrent cell, as in the ENAS
Penn Treebank set-up (Pham et al. 2018, Sec. 3.1; the authors' code
``src/ptb/ptb_enas_child.py``) and NAS-RL's (Zoph & Le 2017, Sec. 4.2).

``embedding -> cell over a BPTT window -> tied output embedding`` (Inan et
al. 2017; Press & Wolf 2017), with the ENAS regularisers:

* embedding dropout: whole word vectors dropped, per window (``embed_keep``;
  Gal & Ghahramani 2016, Sec. 4);
* variational dropout of the cell's inputs and of the states its matmuls
  read, one mask per window (``input_keep``, ``hidden_keep``);
* output dropout before the decoder (``output_keep``).

A cell is a Linen module called as ``cell(xs [B,T,E], carry, arch, x_mask,
h_mask, step_mask) -> (ys [B,T,H], carry)`` with ``zero_carry(batch)``:
``enas_rnn.ENASCell``, ``rnn_tree_cell.TreeCell`` or :class:`LSTMCell`.

Training carries the hidden state across consecutive windows (truncated
BPTT, gradients stopped at window boundaries). :func:`evaluate` runs a whole
split with the carried state and returns the exact perplexity
``exp(sum NLL / number of targets)``, the short last window included.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nas_jax.children import enas_rnn
from nas_jax.data import ptb


class LSTMCell(nn.Module):
  """A plain LSTM (fused gates), the baseline of the perplexity comparison."""

  hidden_size: int

  def zero_carry(self, batch_size: int):
    z = jnp.zeros((batch_size, self.hidden_size))
    return (z, z)

  @nn.compact
  def __call__(self, xs, carry, arch=None, x_mask=None, h_mask=None,
               step_mask=None):
    H = self.hidden_size
    E = xs.shape[-1]
    init = enas_rnn.uniform_init(enas_rnn.init_range(H))
    w = self.param("w", init, (E + H, 4 * H))
    b = self.param("b", nn.initializers.zeros, (4 * H,))
    B, T = xs.shape[:2]
    x_mask = jnp.ones((B, E)) if x_mask is None else x_mask
    h_mask = jnp.ones((B, H)) if h_mask is None else h_mask
    step_mask = jnp.ones((T,)) if step_mask is None else step_mask
    zx = jnp.einsum("bte,ef->btf", xs * x_mask[:, None], w[:E]) + b

    def step(carry, inp):
      h, c = carry
      zx_t, m_t = inp
      i, f, g, o = jnp.split(zx_t + (h * h_mask) @ w[E:], 4, axis=-1)
      c2 = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      h2 = jax.nn.sigmoid(o) * jnp.tanh(c2)
      keep = m_t > 0
      return (jnp.where(keep, h2, h), jnp.where(keep, c2, c)), h2

    carry, ys = jax.lax.scan(step, carry, (zx.swapaxes(0, 1), step_mask))
    return ys.swapaxes(0, 1), carry


def _keep_mask(key, shape, keep: float):
  """Inverted-dropout mask: 1/keep with probability keep, else 0."""
  if keep >= 1.0:
    return jnp.ones(shape)
  return jax.random.bernoulli(key, keep, shape).astype(jnp.float32) / keep


class LanguageModel(nn.Module):
  """Embedding, a recurrent cell, tied softmax.

  Attributes:
    vocab_size: ``V``.
    cell: the recurrent cell module; its width is the embedding size.
    embed_keep, input_keep, hidden_keep, output_keep: keep probabilities
      (ENAS search: 0.75, 0.25, 0.75, 0.25 in ``scripts/ptb_search.sh``).
  """

  vocab_size: int
  cell: nn.Module
  embed_keep: float = 1.0
  input_keep: float = 1.0
  hidden_keep: float = 1.0
  output_keep: float = 1.0

  def zero_carry(self, batch_size: int):
    return self.cell.zero_carry(batch_size)

  @nn.compact
  def __call__(self, inputs, carry, arch, key=None, step_mask=None):
    """``inputs int32[B, T]`` -> ``(logits f32[B, T, V], carry)``; with a
    ``key`` the dropouts are on (training), without it off."""
    H = self.cell.hidden_size
    emb = self.param("embedding",
                     enas_rnn.uniform_init(enas_rnn.init_range(H)),
                     (self.vocab_size, H))
    B = inputs.shape[0]
    table = emb
    x_mask = h_mask = o_mask = None
    if key is not None:
      k_e, k_x, k_h, k_o = jax.random.split(key, 4)
      table = emb * _keep_mask(k_e, (self.vocab_size, 1), self.embed_keep)
      x_mask = _keep_mask(k_x, (B, H), self.input_keep)
      h_mask = _keep_mask(k_h, (B, H), self.hidden_keep)
      o_mask = _keep_mask(k_o, (B, H), self.output_keep)
    xs = table[inputs]  # [B, T, H]
    ys, carry = self.cell(xs, carry, arch, x_mask, h_mask, step_mask)
    if o_mask is not None:
      ys = ys * o_mask[:, None]
    logits = ys @ emb.T  # [B, T, V], tied with the input embedding
    return logits, carry


def token_nll(logits, targets):
  """``-log p(target)`` per position, ``[B, T]``."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets)


class LMState(NamedTuple):
  params: Any
  opt_state: optax.OptState
  carry: Any        # hidden state carried across training windows
  step: jax.Array   # i32[]


def make_optimizer(learning_rate: float, grad_clip: float = 0.25,
                   weight_decay: float = 0.0, momentum: float = 0.0
                   ) -> optax.GradientTransformation:
  """SGD with global-norm clipping and L2, the ENAS / AWD-LSTM child
  optimiser (ptb_search.sh: grad bound, l2_reg)."""
  if learning_rate <= 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
  parts = []
  if grad_clip:
    parts.append(optax.clip_by_global_norm(grad_clip))
  if weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay))
  parts.append(optax.sgd(learning_rate, momentum=momentum or None))
  return optax.chain(*parts)


class Batch(NamedTuple):
  """One training window and whether it starts a pass (reset the carry)."""

  inputs: jax.Array   # int32[B, T]
  targets: jax.Array  # int32[B, T]
  mask: jax.Array     # f32[B, T]
  reset: jax.Array    # f32[]: 1.0 at the first window of an epoch


def init_state(model: LanguageModel, tx, key, batch_size: int,
               arch) -> LMState:
  carry = model.zero_carry(batch_size)
  params = model.init(key, jnp.zeros((batch_size, 1), jnp.int32), carry,
                      arch)["params"]
  return LMState(params, tx.init(params), carry, jnp.zeros((), jnp.int32))


def make_train_step(model: LanguageModel, tx) -> Callable:
  """``step(state, arch, batch, key) -> (state, {"loss": mean NLL})``:
  jittable; the carry is reset where ``batch.reset`` and detached."""

  def train_step(state: LMState, arch, batch: Batch, key):
    carry = jax.tree.map(lambda c: c * (1.0 - batch.reset), state.carry)
    step_mask = batch.mask[0]

    def loss_fn(params):
      logits, new_carry = model.apply({"params": params}, batch.inputs, carry,
                                      arch, key, step_mask)
      nll = token_nll(logits, batch.targets)
      loss = jnp.sum(nll * batch.mask) / jnp.maximum(jnp.sum(batch.mask), 1)
      return loss, new_carry

    (loss, new_carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_carry = jax.lax.stop_gradient(new_carry)
    grad_norm = optax.tree.norm(grads)
    # A window whose loss or gradient overflowed (a shared cell of ReLU /
    # identity nodes can) would turn every weight into NaN through the
    # clipping: skip its update and restart the carried state instead.
    ok = jnp.isfinite(grad_norm) & jnp.isfinite(loss)
    keep = lambda new, old: jax.tree.map(
        lambda n, o: jnp.where(ok, n, o), new, old)
    params = keep(params, state.params)
    opt_state = keep(opt_state, state.opt_state)
    new_carry = jax.tree.map(lambda c: jnp.where(ok, c, 0.0), new_carry)
    return (LMState(params, opt_state, new_carry, state.step + 1),
            {"loss": loss, "grad_norm": grad_norm,
             "skipped": 1.0 - ok.astype(jnp.float32)})

  return train_step


def make_eval_step(model: LanguageModel) -> Callable:
  """``step(params, carry, arch, inputs, targets, mask) -> (nll_sum,
  count, carry)`` without dropout."""

  def eval_step(params, carry, arch, inputs, targets, mask):
    logits, carry = model.apply({"params": params}, inputs, carry, arch,
                                None, mask[0])
    nll = token_nll(logits, targets)
    return jnp.sum(nll * mask), jnp.sum(mask), carry

  return eval_step


class Perplexity(NamedTuple):
  perplexity: float
  nll_sum: float
  num_tokens: int


def evaluate(eval_step, params, arch, stream: np.ndarray, bptt: int,
             carry) -> Perplexity:
  """Exact perplexity of a whole batchified split (``int32[B, N]``): every
  token after each stream's first is predicted once, with the hidden state
  carried across windows; the last, shorter window is padded and masked, so
  one compiled step serves all windows. ``eval_step`` is the (jitted) result
  of :func:`make_eval_step`."""
  ptb.check_bptt(stream, bptt)
  total, count = 0.0, 0.0
  for start, length in ptb.fixed_windows(stream.shape[1], bptt):
    w = ptb.window(stream, int(start), int(length), pad_to=bptt)
    nll, n, carry = eval_step(params, carry, arch, w.inputs, w.targets,
                              w.mask)
    total += float(nll)
    count += float(n)
  expected = stream.shape[0] * (stream.shape[1] - 1)
  assert int(count) == expected, (count, expected)
  return Perplexity(math.exp(total / count), total, int(count))


def param_count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
