"""Progressive neural architecture search (PNAS; Liu et al., ECCV 2018,
Algorithm 1; seed 002).

PNAS grows cells one block at a time: it evaluates every cell of the first
block(s), fits an accuracy predictor (``controllers.surrogate``), then
repeatedly expands each of the K cells of its beam by every choice of the
next block, keeps the K expansions the predictor ranks highest, evaluates
them and fine-tunes the predictor on the new results.

Here a "block" is one decision of the space, added in ``block_order`` (a
permutation of the decisions; the space's own order by default). A decision
not added yet holds ``fill`` when the cell is evaluated (for NAS-Bench-201,
``fill=0`` is the "none" op: the edge does not exist yet, PNAS's smaller
cell) and the token "not chosen yet" for the predictor. On the
NAS-Bench-201 cell the blocks are the 6 edges; the preset adds them along
paths to the output node, ``(3<-0), (1<-0), (3<-1), (2<-0), (2<-1),
(3<-2)``, so each new edge can change the cell's output early.

Every round evaluates exactly ``beam_size`` cells, so the algorithm fits the
``init / propose / feedback`` shape with ``batch_size = beam_size`` and the
whole search jits and vmaps over seeds. The first round takes the fewest
leading blocks whose cells number at least K and evaluates K of them drawn
at random (all of them when the count is exactly K: PNAS's "all 1-block
cells"). The predictor is trained from its initialisation after the first
round and fine-tuned, ``fit_steps`` Adam steps on all data so far, after
each later one. After the last block the search is over: later rounds
propose the final beam again, best first (the history then shows repeats;
the best cell does not change).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.algorithms import base
from nas_jax.controllers import surrogate as surrogate_lib
from nas_jax.spaces import base as spaces_base


class PNASState(NamedTuple):
  params: Any            # the predictor ensemble (leading axis: members)
  opt_state: Any
  beam: jax.Array        # i32[K, T]: the cells of this round
  num_blocks: jax.Array  # i32[]: blocks set in the beam's cells
  data_tokens: jax.Array   # i32[N, T]: predictor inputs seen so far
  data_rewards: jax.Array  # f32[N]
  data_count: jax.Array    # i32[]
  loss: jax.Array        # f32[]: mean training L1 error of the last fit


def _check_order(block_order, T) -> np.ndarray:
  order = np.arange(T) if block_order is None else np.asarray(
      block_order, np.int64)
  if order.shape != (T,) or sorted(order.tolist()) != list(range(T)):
    raise ValueError(f"pnas.block_order must be a permutation of 0..{T - 1} "
                     f"(one entry per decision), got {block_order!r}")
  return order


def _first_round(space, order, K) -> tuple[int, np.ndarray]:
  """The fewest leading blocks whose cells number >= K, and all those cells
  (choices of the first blocks, mixed radix; [n, b0])."""
  nc = space.num_choices[order]
  count = 1
  for b0, c in enumerate(nc, start=1):
    count *= int(c)
    if count >= K:
      break
  else:
    raise ValueError(
        f"pnas.beam_size={K} exceeds the {count} cells of space "
        f"{space.name!r}; use a beam_size <= {count}")
  grids = np.meshgrid(*[np.arange(c) for c in nc[:b0]], indexing="ij")
  return b0, np.stack([g.reshape(-1) for g in grids], axis=1)


def pnas(space: spaces_base.SearchSpace, *, beam_size: int = 20,
         block_order: Sequence[int] | None = None, fill: int = 0,
         fit_steps: int = 100, surrogate: dict | None = None
         ) -> base.Algorithm:
  """PNAS over ``space`` (module doc).

  Args:
    beam_size: K, the cells kept (and evaluated) per round.
    block_order: the order decisions are added in (default: the space's).
    fill: the choice an unset decision holds when a cell is evaluated.
    fit_steps: Adam steps of the predictor after each round.
    surrogate: ``controllers.surrogate.make_surrogate`` kwargs (``kind``
      "lstm" or "mlp", ``ensemble_size`` 5, ``hidden_size``,
      ``hidden_sizes``, ``learning_rate``).
  """
  if not isinstance(beam_size, (int, np.integer)) or beam_size < 1:
    raise ValueError(f"pnas.beam_size (K) must be an integer >= 1, got "
                     f"{beam_size!r}")
  if not isinstance(fit_steps, (int, np.integer)) or fit_steps < 1:
    raise ValueError(f"pnas.fit_steps must be an integer >= 1, got "
                     f"{fit_steps!r}")
  T = space.num_decisions
  order = _check_order(block_order, T)
  bad = [d.name for d in space.decisions if not 0 <= fill < d.num_choices]
  if bad:
    raise ValueError(f"pnas.fill={fill} is not a choice of decision(s) "
                     f"{', '.join(bad)}; use a fill in "
                     f"0..{min(space.num_choices) - 1}")
  K = int(beam_size)
  sur = surrogate_lib.make_surrogate(space, **dict(surrogate or {}))
  b0, first = _first_round(space, order, K)
  first_archs = np.full((first.shape[0], T), fill, np.int32)
  first_archs[:, order[:b0]] = first
  first_archs = jnp.asarray(first_archs)
  N = K * (T - b0 + 1)  # every round's cells, up to the last block
  C = int(space.num_choices.max())
  nc = jnp.asarray(space.num_choices)
  order_j = jnp.asarray(order)

  def init(key):
    k_sur, k_pick = jax.random.split(key)
    params, opt_state = sur.init(k_sur)
    pick = jax.random.permutation(k_pick, first_archs.shape[0])[:K]
    return PNASState(params, opt_state, first_archs[pick],
                     jnp.asarray(b0, jnp.int32),
                     jnp.zeros((N, T), jnp.int32), jnp.zeros((N,)),
                     jnp.zeros((), jnp.int32), jnp.zeros(()))

  def propose(state, key):
    del key  # each round's cells are fixed by the last feedback
    return state, state.beam

  def feedback(state, archs, rewards):
    archs = archs.astype(jnp.int32)
    rewards = rewards.astype(jnp.float32)
    slots = state.data_count + jnp.arange(K)  # past N: dropped (search over)
    tokens = surrogate_lib.tokens_of(archs, state.num_blocks, order_j)
    data_tokens = state.data_tokens.at[slots].set(tokens, mode="drop")
    data_rewards = state.data_rewards.at[slots].set(rewards, mode="drop")
    count = jnp.minimum(state.data_count + K, N)
    params, opt_state, loss = sur.fit(
        state.params, state.opt_state, data_tokens, data_rewards,
        jnp.arange(N) < count, fit_steps)
    # Expand every beam cell by every choice of the next block.
    b = state.num_blocks
    d = order_j[jnp.minimum(b, T - 1)]
    choice = jnp.arange(C)
    cand = jnp.repeat(archs[:, None, :], C, axis=1)  # [K, C, T]
    cand = cand.at[:, :, d].set(jnp.broadcast_to(choice, (K, C)))
    cand = cand.reshape(K * C, T)
    scores = sur.predict(params,
                         surrogate_lib.tokens_of(cand, b + 1, order_j))
    scores = jnp.where(jnp.tile(choice < nc[d], K), scores, -jnp.inf)
    expanded = cand[jax.lax.top_k(scores, K)[1]]
    final = archs[jnp.argsort(-rewards)]  # after the last block: best first
    more = b < T
    return PNASState(params, opt_state, jnp.where(more, expanded, final),
                     jnp.where(more, b + 1, b), data_tokens, data_rewards,
                     count, jnp.mean(loss))

  return base.Algorithm(init, propose, feedback, K, "pnas")
