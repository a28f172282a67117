"""One autoregressive LSTM policy for every search space (DESIGN.md, 2).

The controller of NAS-RL (Zoph & Le, ICLR 2017, Sec. 3.1-3.3), NASNet (Zoph et
al., CVPR 2018, Sec. 3) and ENAS (Pham et al., ICML 2018, Sec. 2.1-2.4) is the
same machine run over different decision lists:

* it reads the embedding of the previous decision (a learned "go" vector first),
* a stack of LSTM layers updates its state,
* an ``OP`` decision is a softmax head on the hidden state (heads and
  embeddings are shared by decisions of one group, as ENAS shares them),
* a ``POINTER`` decision attends over earlier anchors with
  ``v^T tanh(W_prev h_j + W_curr h_t)`` (ENAS; NASNet "previous node"),
* a ``SKIP`` decision is the NAS-RL skip connection
  ``P(j -> i) = sigmoid(v^T tanh(W_prev h_j + W_curr h_i))`` (Sec. 3.3), written
  as a 2-way softmax over logits ``(0, s)``. Skip bits do not advance the LSTM:
  all bits of a layer are read off the layer's anchor state, as in the paper.

ENAS's logit shaping ``tanh_constant * tanh(logits / temperature)`` is applied
when ``tanh_constant`` is set. The whole rollout is one ``lax.scan``; a batch of
architectures is ``jax.vmap`` over keys. Sampling and re-scoring share the scan
body, so ``log_prob(arch)`` equals the log-probability reported at sampling.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.spaces import base

_NEG_INF = -1e9  # finite so that 0 * masked logit stays 0 in the entropy
# Decisions; beyond it sampling and re-scoring are scanned. Measured by
# benchmarks/compile_time.py --part unroll (benchmarks/README.md): past 6
# decisions the scanned rollout compiles faster (2.6x at 11, 5-12x for the
# re-scoring gradient at 23-50) and its gradient runs as fast.
UNROLL_MAX = 6


@dataclasses.dataclass(frozen=True)
class SpaceArrays:
  """Static per-decision tables the rollout scans over (numpy, ``[T]``)."""

  kind: np.ndarray
  num_choices: np.ndarray
  head: np.ndarray          # OP: head index; else 0
  token_offset: np.ndarray  # OP/SKIP: first embedding row of the decision
  attn_base: np.ndarray     # POINTER: anchor_base; SKIP: target; else 0
  anchor: np.ndarray        # slot written after the decision, -1: none
  num_heads: int
  head_size: int            # widest OP head
  num_tokens: int
  num_anchors: int
  max_choices: int
  init_anchors: tuple[int, ...]

  @classmethod
  def from_space(cls, space: base.SearchSpace) -> "SpaceArrays":
    heads: dict[str, int] = {}
    offsets: dict[str, int] = {}
    num_tokens = 0
    head, offset, attn = [], [], []
    for d in space.decisions:
      # Embedding rows: one range per OP group; one pair per SKIP decision
      # (on/off), since a skip bit's meaning depends on its target.
      key = d.head if d.kind == base.OP else d.name
      if d.kind != base.POINTER and key not in offsets:
        offsets[key] = num_tokens
        num_tokens += d.num_choices
      if d.kind == base.OP:
        heads.setdefault(d.head, len(heads))
      head.append(heads.get(d.head, 0) if d.kind == base.OP else 0)
      offset.append(offsets.get(key, 0))
      attn.append(d.anchor_base if d.kind == base.POINTER
                  else d.target if d.kind == base.SKIP else 0)
    op_sizes = [d.num_choices for d in space.decisions if d.kind == base.OP]
    return cls(
        kind=np.array([d.kind for d in space.decisions], np.int32),
        num_choices=space.num_choices,
        head=np.array(head, np.int32),
        token_offset=np.array(offset, np.int32),
        attn_base=np.array(attn, np.int32),
        anchor=np.array([d.anchor for d in space.decisions], np.int32),
        num_heads=max(len(heads), 1),
        head_size=max(op_sizes, default=1),
        num_tokens=max(num_tokens, 1),
        num_anchors=max(space.num_anchors, 1),
        max_choices=int(space.num_choices.max()),
        init_anchors=space.init_anchors,
    )


class Rollout(NamedTuple):
  arch: jax.Array      # int32[T]
  log_prob: jax.Array  # f32[], sum over decisions
  entropy: jax.Array   # f32[], sum over decisions
  log_probs: jax.Array | None = None  # f32[T]: per decision (PPO's ratio)


def _lstm_step(w, b, x, state):
  """One LSTM layer step with fused gates (i, f, g, o); ``w: [in+H, 4H]``."""
  c, h = state
  z = jnp.concatenate([x, h], -1) @ w + b
  i, f, g, o = jnp.split(z, 4, axis=-1)
  # The +1 forget-gate bias is the usual trick for stable early training.
  c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return c, h


class LSTMPolicy(nn.Module):
  """The controller as a Flax Linen module.

  Attributes:
    space: the search space whose decisions the policy emits.
    hidden_size: LSTM width (ENAS: 100 for the RNN cell, 64 for CNN cells;
      NAS-RL: 35).
    num_layers: stacked LSTM layers (NAS-RL: 2; ENAS: 1).
    temperature: logits are divided by it (ENAS: 5.0 for CNN cells).
    tanh_constant: if set, logits become ``c * tanh(logits)`` (ENAS: 2.5).
    init_scale: half-width of the uniform initialiser (ENAS: 0.1).
    unroll: trace one specialised step per decision (fast to run; compile
      time grows with the number of decisions) or scan one generic step.
      None: unrolled for up to ``UNROLL_MAX`` (6) decisions, scanned
      beyond, the same for sampling and re-scoring.
  """

  space: base.SearchSpace
  hidden_size: int = 64
  num_layers: int = 1
  temperature: float = 1.0
  tanh_constant: float | None = None
  init_scale: float = 0.1
  unroll: bool | None = None  # None: see the class docstring

  def setup(self):
    sa = SpaceArrays.from_space(self.space)
    self._sa = sa
    hsz = self.hidden_size
    init = nn.initializers.uniform(2 * self.init_scale)
    shifted = lambda k, s: init(k, s) - self.init_scale  # U(-scale, scale)
    self.go = self.param("go", shifted, (hsz,))
    self.embedding = self.param("embedding", shifted, (sa.num_tokens, hsz))
    self.lstm_w = [self.param(f"lstm_{l}_w", shifted, (2 * hsz, 4 * hsz))
                   for l in range(self.num_layers)]
    self.lstm_b = [self.param(f"lstm_{l}_b", nn.initializers.zeros, (4 * hsz,))
                   for l in range(self.num_layers)]
    self.heads_w = self.param("heads_w", shifted,
                              (sa.num_heads, hsz, sa.head_size))
    self.heads_b = self.param("heads_b", nn.initializers.zeros,
                              (sa.num_heads, sa.head_size))
    self.init_anchor_h = self.param(
        "init_anchors", shifted, (max(len(sa.init_anchors), 1), hsz))
    self.attn_prev = self.param("attn_w_prev", shifted, (hsz, hsz))
    self.attn_curr = self.param("attn_w_curr", shifted, (hsz, hsz))
    self.attn_v = self.param("attn_v", shifted, (hsz,))

  def _advance(self, lstm, inp):
    new_lstm, h = [], inp
    for l, state in enumerate(lstm):
      state = _lstm_step(self.lstm_w[l], self.lstm_b[l], h, state)
      new_lstm.append(state)
      h = state[1]
    return tuple(new_lstm), h

  def _shape_logits(self, logits):
    logits = logits / self.temperature
    if self.tanh_constant is not None:
      logits = self.tanh_constant * jnp.tanh(logits)
    return logits

  def _choose(self, logits, noise, forced_a):
    """Gumbel-max sampling; ``noise`` is this decision's row of one
    ``[T, C]`` Gumbel draw, so the unrolled (exact-size logits) and scanned
    (padded logits) rollouts agree, and one RNG call serves the rollout."""
    logp_all = jax.nn.log_softmax(logits)
    if forced_a is None:
      a = jnp.argmax(logits + noise[: logits.shape[0]]).astype(jnp.int32)
    else:
      a = forced_a
    ent = -jnp.sum(jnp.exp(logp_all) * logp_all)
    return a, logp_all[a], ent

  def _rollout(self, key: jax.Array, forced: jax.Array | None) -> Rollout:
    sa = self._sa
    T = len(sa.kind)
    # Unrolled sampling runs up to 2x faster but compiles in time growing
    # with T (see UNROLL_MAX for the measured crossover). Sampling
    # and re-scoring take the same path for a given T: the two paths round
    # differently (~2e-5 over 40-50 decisions), and PPO's ratio and the
    # docs rely on rescore reproducing the sampled log-probability exactly.
    unroll = self.unroll if self.unroll is not None else T <= UNROLL_MAX
    C = max(sa.max_choices, 2)
    noise = (jax.random.gumbel(key, (T, C)) if forced is None
             else [None] * T)
    if unroll:
      return self._rollout_unrolled(noise, forced)
    return self._rollout_scanned(noise, forced)

  def _rollout_unrolled(self, noise, forced) -> Rollout:
    """Python loop over the static decision list: each step computes only what
    its decision kind needs (one head, one attention slice, or one skip score).
    """
    sa = self._sa
    C = max(sa.max_choices, 2)
    hsz = self.hidden_size
    zeros = jnp.zeros((hsz,))
    lstm = tuple((zeros, zeros) for _ in range(self.num_layers))
    raw: dict[int, jax.Array] = {}
    proj: dict[int, jax.Array] = {}
    for i, slot in enumerate(sa.init_anchors):
      raw[slot] = self.init_anchor_h[i]
      proj[slot] = raw[slot] @ self.attn_prev
    inp, h = self.go, zeros
    arch, logps, ents = [], [], []
    for t in range(len(sa.kind)):
      kind, nc = int(sa.kind[t]), int(sa.num_choices[t])
      if kind != base.SKIP:  # skip bits read the layer's anchor state
        lstm, h = self._advance(lstm, inp)
      if kind == base.OP:
        head = int(sa.head[t])
        logits = (h @ self.heads_w[head] + self.heads_b[head])[:nc]
      else:
        lo = int(sa.attn_base[t])
        slots = range(lo, lo + nc) if kind == base.POINTER else [lo]
        keys_proj = jnp.stack([proj[j] for j in slots])
        scores = jnp.tanh(keys_proj + h @ self.attn_curr) @ self.attn_v
        logits = scores if kind == base.POINTER else jnp.stack(
            [jnp.zeros(()), scores[0]])
      logits = self._shape_logits(logits)
      a, logp, ent = self._choose(logits, noise[t],
                                  None if forced is None else forced[t])
      arch.append(a)
      logps.append(logp)
      ents.append(ent)
      if kind == base.POINTER:  # ENAS feeds the picked anchor back in
        inp = jnp.stack([raw[j] for j in slots])[a]
      else:
        inp = self.embedding[int(sa.token_offset[t]) + a]
      if sa.anchor[t] >= 0:
        raw[int(sa.anchor[t])] = h
        proj[int(sa.anchor[t])] = h @ self.attn_prev
    return Rollout(jnp.stack(arch), jnp.sum(jnp.stack(logps)),
                   jnp.sum(jnp.stack(ents)), log_probs=jnp.stack(logps))

  def _rollout_scanned(self, noise, forced) -> Rollout:
    """One ``lax.scan`` step for every decision: compiles in constant time for
    long decision lists, at the cost of computing every kind's logits."""
    sa = self._sa
    hsz, T, A = self.hidden_size, len(sa.kind), sa.num_anchors
    C = max(sa.max_choices, 2)
    # The carry starts from the params (times 0) rather than from constants,
    # so under shard_map it is device-varying like the params mixed into it
    # (scan needs matching carry types; shard_map docs, "scan-vma").
    zeros = self.go * 0.0
    anchors_raw = jnp.zeros((A, hsz)) + zeros
    if sa.init_anchors:
      anchors_raw = anchors_raw.at[np.array(sa.init_anchors)].set(
          self.init_anchor_h[: len(sa.init_anchors)])
    anchors_proj = anchors_raw @ self.attn_prev
    lstm = tuple((zeros, zeros) for _ in range(self.num_layers))
    xs = (noise if forced is None else jnp.zeros((T,), jnp.uint32),
          jnp.zeros((T,), jnp.int32) if forced is None else forced,
          *(jnp.asarray(v) for v in (sa.kind, sa.num_choices, sa.head,
                                     sa.token_offset, sa.attn_base,
                                     sa.anchor)))
    choice_ids = jnp.arange(C)

    def step(carry, x):
      lstm, h, inp, a_raw, a_proj = carry
      k, forced_a, kind, nc, head, off, attn_base, anchor = x
      new_lstm, new_h = self._advance(lstm, inp)
      advance = kind != base.SKIP
      lstm = jax.tree.map(lambda n, o: jnp.where(advance, n, o), new_lstm,
                          lstm)
      h = jnp.where(advance, new_h, h)
      op_logits = h @ self.heads_w[head] + self.heads_b[head]
      op_logits = jnp.pad(op_logits, (0, C - op_logits.shape[0]))
      scores = jnp.tanh(a_proj + h @ self.attn_curr) @ self.attn_v  # [A]
      ptr_logits = scores[jnp.clip(attn_base + choice_ids, 0, A - 1)]
      skip_logits = jnp.zeros((C,)).at[1].set(scores[attn_base])
      logits = jnp.select([kind == base.OP, kind == base.POINTER],
                          [op_logits, ptr_logits], skip_logits)
      logits = jnp.where(choice_ids < nc, self._shape_logits(logits), _NEG_INF)
      a, logp, ent = self._choose(logits, k,
                                  None if forced is None else forced_a)
      emb = self.embedding[jnp.clip(off + a, 0, sa.num_tokens - 1)]
      inp = jnp.where(kind == base.POINTER,
                      a_raw[jnp.clip(attn_base + a, 0, A - 1)], emb)
      slot = jnp.maximum(anchor, 0)
      a_raw = jnp.where(anchor >= 0, a_raw.at[slot].set(h), a_raw)
      a_proj = jnp.where(anchor >= 0,
                         a_proj.at[slot].set(h @ self.attn_prev), a_proj)
      return (lstm, h, inp, a_raw, a_proj), (a, logp, ent)

    carry = (lstm, zeros, self.go, anchors_raw, anchors_proj)
    _, (arch, logp, ent) = jax.lax.scan(step, carry, xs)
    return Rollout(arch, jnp.sum(logp), jnp.sum(ent), log_probs=logp)

  def sample(self, key: jax.Array) -> Rollout:
    """Samples one architecture: ``(arch int32[T], log_prob, entropy)``."""
    return self._rollout(key, None)

  def log_prob(self, arch: jax.Array) -> Rollout:
    """Re-scores ``arch`` (teacher forcing); differentiable in the params."""
    return self._rollout(jnp.zeros((), jnp.uint32), arch.astype(jnp.int32))

  def __call__(self, key: jax.Array) -> Rollout:
    return self.sample(key)

  def create_params(self) -> jax.Array:
    """Runs ``setup`` only: ``init`` through this method creates every
    parameter without tracing a rollout (which would cost seconds of
    compilation inside every jitted search)."""
    return self.go


class Controller(NamedTuple):
  """Pure functions over a policy's params (the DESIGN.md signatures).

  ``sample(params, key) -> Rollout``, ``log_prob(params, arch) -> f32[]`` and
  ``rescore(params, arch) -> Rollout`` act on one architecture; batch them
  with ``jax.vmap``.
  """

  init: Any
  sample: Any
  log_prob: Any
  rescore: Any  # (params, arch) -> Rollout with log_prob and entropy
  module: LSTMPolicy


def make_controller(space: base.SearchSpace, **module_kwargs) -> Controller:
  """Builds the policy for ``space`` and returns its pure functions."""
  module = LSTMPolicy(space=space, **module_kwargs)

  def init(key: jax.Array):
    return module.init(key, method=LSTMPolicy.create_params)["params"]

  def sample(params, key: jax.Array) -> Rollout:
    return module.apply({"params": params}, key, method=LSTMPolicy.sample)

  def log_prob(params, arch: jax.Array) -> jax.Array:
    return module.apply({"params": params}, arch,
                        method=LSTMPolicy.log_prob).log_prob

  def rescore(params, arch: jax.Array) -> Rollout:
    return module.apply({"params": params}, arch, method=LSTMPolicy.log_prob)

  return Controller(init, sample, log_prob, rescore, module)
