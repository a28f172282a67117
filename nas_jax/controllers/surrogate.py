"""PNAS's accuracy predictor: an ensemble of small networks over a cell's
tokens (Liu et al., ECCV 2018, Sec. 3.3 and 4; seed 002, "Performance
Prediction with Surrogate Model").

A (partial) cell is read as ``T`` tokens, one per decision of the space:
``choice + 1``, or 0 for a decision not made yet (a block PNAS has not added),
so cells of every size share one fixed-length, jittable input. Two models:

* ``"lstm"``: an LSTM over the token embeddings, its last hidden state to one
  sigmoid unit (PNAS's RNN predictor; the sigmoid because accuracies lie in
  [0, 1]);
* ``"mlp"``: the one-hot tokens through ``hidden_sizes`` ReLU layers to a
  sigmoid unit (PNAS's MLP variant); ``hidden_sizes=()`` is a logistic
  regression over the tokens.

The ensemble has ``ensemble_size`` members; member ``k`` is trained on the
examples whose fold ``index % ensemble_size`` is not ``k`` (PNAS: "5-fold:
each predictor trained on 4/5 of the data"), and a prediction is the members'
mean. Training minimises the L1 error (PNAS Sec. 5.1) with Adam; all members
train in one vmapped step.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from nas_jax.algorithms import base as algo_base

KINDS = ("lstm", "mlp")


class LSTMSurrogate(nn.Module):
  """LSTM over per-position token embeddings -> sigmoid (PNAS Sec. 3.3)."""
  num_tokens: int     # T * (C + 1): a table row per (position, token)
  num_positions: int  # T
  hidden_size: int = 32

  @nn.compact
  def __call__(self, tokens):  # [N, T] -> [N]
    vocab = self.num_tokens // self.num_positions
    ids = tokens + vocab * jnp.arange(self.num_positions)  # [N, T]
    x = nn.Embed(self.num_tokens, self.hidden_size)(ids)  # [N, T, H]
    h = nn.RNN(nn.OptimizedLSTMCell(self.hidden_size))(x)  # [N, T, H]
    return jax.nn.sigmoid(nn.Dense(1)(h[:, -1])[:, 0])


class MLPSurrogate(nn.Module):
  """One-hot tokens -> ReLU MLP -> sigmoid (PNAS's MLP predictor)."""
  num_tokens: int
  num_positions: int
  hidden_sizes: Sequence[int] = (64,)

  @nn.compact
  def __call__(self, tokens):  # [N, T] -> [N]
    vocab = self.num_tokens // self.num_positions
    x = jax.nn.one_hot(tokens, vocab).reshape(tokens.shape[0], -1)
    for size in self.hidden_sizes:
      x = nn.relu(nn.Dense(size)(x))
    return jax.nn.sigmoid(nn.Dense(1)(x)[:, 0])


class Surrogate(NamedTuple):
  """Pure functions over the stacked ensemble (leading axis: members).

  ``init(key) -> (params, opt_state)``; ``predict(params, tokens [N, T]) ->
  f32[N]`` (ensemble mean); ``member_predictions(params, tokens) -> [E, N]``;
  ``train_step(params, opt_state, tokens, targets f32[N], valid bool[N]) ->
  (params, opt_state, loss f32[E])``; ``fit(params, opt_state, tokens,
  targets, valid, steps)`` runs ``steps`` of them.
  """
  init: Callable[[jax.Array], tuple[Any, Any]]
  predict: Callable[[Any, jax.Array], jax.Array]
  member_predictions: Callable[[Any, jax.Array], jax.Array]
  train_step: Callable[..., tuple[Any, Any, jax.Array]]
  fit: Callable[..., tuple[Any, Any, jax.Array]]
  ensemble_size: int


def tokens_of(archs: jax.Array, num_blocks_set: jax.Array | None = None,
              order: jax.Array | None = None) -> jax.Array:
  """The surrogate's tokens of architectures ``int32[..., T]``: ``a + 1``,
  with the decisions at block positions ``>= num_blocks_set`` of ``order``
  (a permutation of ``range(T)``) made 0, "not chosen yet"."""
  tokens = archs.astype(jnp.int32) + 1
  if num_blocks_set is None:
    return tokens
  rank = jnp.argsort(order)  # rank[t]: the block number of decision t
  return jnp.where(rank < num_blocks_set, tokens, 0)


def make_surrogate(space, *, kind: str = "lstm", ensemble_size: int = 5,
                   hidden_size: int = 32,
                   hidden_sizes: Sequence[int] = (64,),
                   learning_rate: float = 0.01) -> Surrogate:
  """The ensemble predictor over ``space``'s cells (module doc)."""
  if kind not in KINDS:
    raise ValueError(f"pnas.surrogate.kind must be one of {KINDS}, got "
                     f"{kind!r}")
  if not isinstance(ensemble_size, int) or ensemble_size < 1:
    raise ValueError(f"pnas.surrogate.ensemble_size must be an integer >= 1 "
                     f"(PNAS uses 5), got {ensemble_size!r}")
  algo_base.check_positive("pnas.surrogate.learning_rate", learning_rate)
  T = space.num_decisions
  vocab = int(space.num_choices.max()) + 1  # + "not chosen yet"
  if kind == "lstm":
    algo_base.check_positive("pnas.surrogate.hidden_size", hidden_size)
    model = LSTMSurrogate(T * vocab, T, hidden_size)
  else:
    model = MLPSurrogate(T * vocab, T, tuple(hidden_sizes))
  opt = optax.adam(learning_rate)
  E = ensemble_size

  def init(key):
    dummy = jnp.zeros((1, T), jnp.int32)
    params = jax.vmap(lambda k: model.init(k, dummy))(jax.random.split(key,
                                                                      E))
    return params, jax.vmap(opt.init)(params)

  def member_predictions(params, tokens):
    return jax.vmap(model.apply, (0, None))(params, tokens)  # [E, N]

  def predict(params, tokens):
    return jnp.mean(member_predictions(params, tokens), axis=0)

  def member_loss(p, tokens, targets, weights):
    err = jnp.abs(model.apply(p, tokens) - targets)
    return jnp.sum(weights * err) / jnp.maximum(jnp.sum(weights), 1.0)

  def member_weights(valid):
    # Member k leaves out fold k (index % E); a lone member sees everything.
    fold = jnp.arange(valid.shape[0]) % E
    held_out = (fold[None, :] == jnp.arange(E)[:, None]) & (E > 1)
    return (valid[None, :] & ~held_out).astype(jnp.float32)  # [E, N]

  def train_step(params, opt_state, tokens, targets, valid):
    def one(p, s, w):
      loss, grads = jax.value_and_grad(member_loss)(p, tokens, targets, w)
      updates, s = opt.update(grads, s, p)
      return optax.apply_updates(p, updates), s, loss
    return jax.vmap(one)(params, opt_state, member_weights(valid))

  def fit(params, opt_state, tokens, targets, valid, steps: int):
    def body(carry, _):
      p, s = carry
      p, s, loss = train_step(p, s, tokens, targets, valid)
      return (p, s), loss
    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state),
                                               None, length=steps)
    return params, opt_state, losses[-1]

  return Surrogate(init, predict, member_predictions, train_step, fit, E)
