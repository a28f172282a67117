"""Tabular Q-learning over a space's decisions (Block-QNN, Zhong et al., AAAI
2018 / CVPR 2018; MetaQNN, Baker et al., ICLR 2017).

An architecture is an episode: the agent makes the space's decisions one at a
time, layer by layer as Block-QNN's agent picks the next layer. The state at
step ``t`` is ``(t, a_{t-1})``: the decision index and the previous choice
(``a_{-1}`` is a start token), a compact encoding that fits every space of
the library (for NAS-Bench-201, "which edge, and which op was put on the edge
before"). The action is the choice ``a_t``; after the last decision the
episode ends in a terminal state of value 0. The state does not hold the
whole partial architecture (neither does Block-QNN's "current layer" state),
so values are averages over the histories that reach it: a table, not a
model, of the space.

The update is seed 000's (Block-QNN slides)::

    Q(s_t, u) <- (1 - alpha) Q(s_t, u)
                 + alpha [r_t + gamma max_u' Q(s_{t+1}, u')]

with ``gamma = 1`` by default (the seed's formula has no discount). The
accuracy is only known at the end of the episode; Block-QNN's reward shaping
(CVPR 2018 version, Sec. 3.3) spreads it along the trajectory, ``r_t = r / T``
(``reward_shaping="uniform"``); ``"final"`` gives the whole reward at the
last step (MetaQNN). A trajectory is updated from its last step to its first,
so the reward reaches ``s_0`` in one pass (MetaQNN, Sec. 3.2).

Exploration is epsilon-greedy: ``epsilon_start`` for the first
``explore_episodes`` episodes, then a linear decay to ``epsilon_end`` over
``decay_episodes`` (MetaQNN / Block-QNN step epsilon down from 1.0 to 0.1 in
stages; the linear ramp is that staircase smoothed). Greedy ties are broken
uniformly at random, so an untrained table does not always pick choice 0.
Experience replay (MetaQNN Sec. 3.2, Block-QNN Sec. 3.3): every evaluated
(architecture, reward) goes into a ring buffer, and after each round the new
trajectories and ``replay_samples`` trajectories drawn uniformly from the
buffer are replayed through the update.

The table, the buffer and the PRNG key are arrays in the state, so the whole
search jits, vmaps over seeds and checkpoints like the other algorithms.
``greedy(space, state)`` is the architecture of the trained agent.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.algorithms import base
from nas_jax.spaces import base as spaces_base

REWARD_SHAPINGS = ("uniform", "final")


class QLearningState(NamedTuple):
  q: jax.Array               # f32[T, C + 1, C]: Q[t, a_{t-1} + 1, a_t]
  replay_archs: jax.Array    # i32[R, T]
  replay_rewards: jax.Array  # f32[R]
  replay_size: jax.Array     # i32[]: filled entries, <= R
  replay_pos: jax.Array      # i32[]: next ring slot
  num_episodes: jax.Array    # i32[]: episodes proposed so far
  epsilon: jax.Array         # f32[]: used by the last proposal, for metrics
  key: jax.Array             # PRNG key of the replay draws


def epsilon_at(episode, *, epsilon_start: float, epsilon_end: float,
               explore_episodes: int, decay_episodes: int) -> jax.Array:
  """The exploration rate of episode ``episode`` (0-based): flat at
  ``epsilon_start``, then linear to ``epsilon_end``, then flat."""
  frac = (jnp.asarray(episode, jnp.float32) - explore_episodes) / max(
      decay_episodes, 1)
  frac = jnp.clip(frac, 0.0, 1.0)
  return epsilon_start + frac * (epsilon_end - epsilon_start)


def _valid_mask(space: spaces_base.SearchSpace) -> np.ndarray:
  nc = space.num_choices
  return np.arange(int(nc.max()))[None, :] < nc[:, None]  # [T, C]


def update_trajectory(q: jax.Array, arch: jax.Array, reward: jax.Array, *,
                      valid: jax.Array, learning_rate: float,
                      discount: float = 1.0,
                      reward_shaping: str = "uniform") -> jax.Array:
  """One pass of the Q update over an episode, from its last step back.

  Args:
    q: f32[T, C + 1, C] table.
    arch: i32[T], the episode's choices.
    reward: f32[], the architecture's reward.
    valid: bool[T, C], which choices exist at each step (max over u' only
      ranges over them).

  Returns:
    The updated table.
  """
  T = arch.shape[0]
  arch = arch.astype(jnp.int32)
  prev = jnp.concatenate([jnp.zeros((1,), jnp.int32), arch[:-1] + 1])  # [T]
  if reward_shaping == "uniform":
    rewards = jnp.full((T,), reward / T, jnp.float32)
  else:
    rewards = jnp.zeros((T,), jnp.float32).at[T - 1].set(reward)

  def step(q, t):
    # Value of the next state (terminal after the last decision: 0).
    t_next = jnp.minimum(t + 1, T - 1)
    row = jnp.where(valid[t_next], q[t_next, arch[t] + 1], -jnp.inf)
    next_value = jnp.where(t + 1 < T, jnp.max(row), 0.0)
    target = rewards[t] + discount * next_value
    old = q[t, prev[t], arch[t]]
    return q.at[t, prev[t], arch[t]].set(
        (1.0 - learning_rate) * old + learning_rate * target), None

  q, _ = jax.lax.scan(step, q, jnp.arange(T - 1, -1, -1))
  return q


def greedy(space: spaces_base.SearchSpace, state: QLearningState) -> jax.Array:
  """The trained agent's architecture: the highest-valued choice at every
  step (first on ties). i32[T]."""
  valid = jnp.asarray(_valid_mask(space))

  def step(prev, t):
    row = jnp.where(valid[t], state.q[t, prev], -jnp.inf)
    a = jnp.argmax(row).astype(jnp.int32)
    return a + 1, a

  _, arch = jax.lax.scan(step, jnp.zeros((), jnp.int32),
                         jnp.arange(space.num_decisions))
  return arch


def q_learning(space: spaces_base.SearchSpace, *, batch_size: int = 1,
               learning_rate: float = 0.01, discount: float = 1.0,
               q_init: float = 0.5, reward_shaping: str = "uniform",
               epsilon_start: float = 1.0, epsilon_end: float = 0.1,
               explore_episodes: int = 100, decay_episodes: int = 100,
               replay_size: int = 1000, replay_samples: int = 100
               ) -> base.Algorithm:
  """Epsilon-greedy tabular Q-learning with replay over ``space``.

  Args:
    batch_size: episodes proposed per round (Block-QNN evaluates 64 blocks
      per iteration; 1 is MetaQNN's loop).
    learning_rate: alpha of the update (Block-QNN and MetaQNN: 0.01).
    discount: gamma (Block-QNN: 1, as the seed's formula).
    q_init: the initial value of every entry (MetaQNN: 0.5, about a
      typical accuracy, so untried choices keep being tried).
    reward_shaping: ``"uniform"`` (``r_t = r / T``, Block-QNN) or
      ``"final"`` (all at the last step).
    epsilon_start, epsilon_end, explore_episodes, decay_episodes: the
      schedule (see ``epsilon_at``).
    replay_size: R, the replay buffer's capacity (a ring; the oldest go).
    replay_samples: trajectories drawn from the buffer and replayed after
      each round, on top of the round's own (0 turns replay off).
  """
  base.check_positive("q_learning.batch_size", batch_size)
  base.check_positive("q_learning.learning_rate", learning_rate)
  if not isinstance(learning_rate, jax.core.Tracer) and learning_rate > 1:
    raise ValueError(f"q_learning.learning_rate must be in (0, 1], got "
                     f"{learning_rate}")
  if not isinstance(discount, jax.core.Tracer) and not 0 <= discount <= 1:
    raise ValueError(f"q_learning.discount must be in [0, 1], got "
                     f"{discount}")
  if reward_shaping not in REWARD_SHAPINGS:
    raise ValueError(f"q_learning.reward_shaping must be one of "
                     f"{REWARD_SHAPINGS}, got {reward_shaping!r}")
  for name, eps in (("epsilon_start", epsilon_start),
                    ("epsilon_end", epsilon_end)):
    if not 0.0 <= eps <= 1.0:
      raise ValueError(f"q_learning.{name} must be in [0, 1], got {eps}")
  base.check_positive("q_learning.explore_episodes", explore_episodes,
                      allow_zero=True)
  base.check_positive("q_learning.decay_episodes", decay_episodes,
                      allow_zero=True)
  base.check_positive("q_learning.replay_size", replay_size)
  if replay_size < batch_size:
    raise ValueError(f"q_learning.replay_size must be >= q_learning."
                     f"batch_size ({batch_size}), got {replay_size}")
  base.check_positive("q_learning.replay_samples", replay_samples,
                      allow_zero=True)
  T = space.num_decisions
  C = int(space.num_choices.max())
  nc = jnp.asarray(space.num_choices)
  valid = jnp.asarray(_valid_mask(space))
  schedule = dict(epsilon_start=epsilon_start, epsilon_end=epsilon_end,
                  explore_episodes=explore_episodes,
                  decay_episodes=decay_episodes)
  update = lambda q, arch, r: update_trajectory(
      q, arch, r, valid=valid, learning_rate=learning_rate,
      discount=discount, reward_shaping=reward_shaping)

  def init(key):
    return QLearningState(
        q=jnp.full((T, C + 1, C), q_init, jnp.float32),
        replay_archs=jnp.zeros((replay_size, T), jnp.int32),
        replay_rewards=jnp.zeros((replay_size,), jnp.float32),
        replay_size=jnp.zeros((), jnp.int32),
        replay_pos=jnp.zeros((), jnp.int32),
        num_episodes=jnp.zeros((), jnp.int32),
        epsilon=jnp.asarray(epsilon_start, jnp.float32), key=key)

  def episode(q, eps, key):
    def step(prev, xs):
      t, k = xs
      k_explore, k_random, k_tie = jax.random.split(k, 3)
      row = jnp.where(valid[t], q[t, prev], -jnp.inf)
      # Uniform among the maxima: ties are common in a fresh table.
      ties = jnp.where(row == jnp.max(row),
                       jax.random.uniform(k_tie, row.shape), -1.0)
      a = jnp.where(jax.random.uniform(k_explore) < eps,
                    jax.random.randint(k_random, (), 0, nc[t]),
                    jnp.argmax(ties)).astype(jnp.int32)
      return a + 1, a

    _, arch = jax.lax.scan(step, jnp.zeros((), jnp.int32),
                           (jnp.arange(T), jax.random.split(key, T)))
    return arch

  def propose(state, key):
    eps = epsilon_at(state.num_episodes + jnp.arange(batch_size), **schedule)
    archs = jax.vmap(episode, (None, 0, 0))(
        state.q, eps, jax.random.split(key, batch_size))  # [m, T]
    return state._replace(num_episodes=state.num_episodes + batch_size,
                          epsilon=eps[-1]), archs

  def feedback(state, archs, rewards):
    archs = archs.astype(jnp.int32)
    rewards = rewards.astype(jnp.float32)
    slots = (state.replay_pos + jnp.arange(batch_size)) % replay_size
    r_archs = state.replay_archs.at[slots].set(archs)
    r_rewards = state.replay_rewards.at[slots].set(rewards)
    size = jnp.minimum(state.replay_size + batch_size, replay_size)

    def learn(q, xs):
      return update(q, *xs), None

    q, _ = jax.lax.scan(learn, state.q, (archs, rewards))
    key, k_replay = jax.random.split(state.key)
    if replay_samples:
      idx = jax.random.randint(k_replay, (replay_samples,), 0, size)
      q, _ = jax.lax.scan(learn, q, (r_archs[idx], r_rewards[idx]))
    return state._replace(q=q, replay_archs=r_archs, replay_rewards=r_rewards,
                          replay_size=size,
                          replay_pos=(state.replay_pos + batch_size)
                          % replay_size, key=key)

  return base.Algorithm(init, propose, feedback, batch_size, "q_learning")
