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
when ``tanh_constant`` is set. Options that make the policy the authors' ENAS
controller (github.com/melodyguan/enas, ``src/cifar10/micro_controller.py``
and ``general_controller.py``), switched on by the ENAS configs:

* ``op_tanh_reduce``: op logits use ``tanh_constant / op_tanh_reduce``
  (pointer and skip logits keep ``tanh_constant``);
* ``op_bias_init`` / ``op_bias_fixed``: the learned op bias starts at the
  authors' values and a constant, non-learned bias is added after the tanh
  (``b_soft`` / ``b_soft_no_learn``; the authors add the constant to the
  normal cell only: ``op_bias_fixed_prefix="normal/"``);
* ``enas_anchors``: each cell's two input anchors are the authors' -- two
  LSTM steps on the go token whose states give the attention keys while the
  anchors themselves (what a picked input feeds back) are zeros -- instead
  of learned vectors;
* ``node_anchor_step``: after a node's (layer's) last op, one more LSTM step
  on the op's embedding gives the node's anchor, and the next node starts
  from the go token;
* ``enas_skips`` (macro): a layer's skip bits come from that extra step,
  with logits ``(-q_j, q_j)``; the next input is the mean of the chosen
  anchors ``sum_j b_j h_j / (1 + sum_j b_j)``; and the rollout reports the
  skip-rate penalty ``skip_weight * mean_i KL(sigmoid(logits_i) ||
  (1 - skip_target, skip_target))`` that REINFORCE adds to its loss.

These options need the unrolled rollout (``unroll`` None picks it). The whole rollout is one ``lax.scan``; a batch of
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
# The cell state passes through _grad_barrier (a faster backward pass).
GRAD_BARRIER = True
# Unrolled rollout: fed-back inputs picked by selects (see _pick).
PICK_BY_SELECT = True


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
  # f32[]: a loss term the policy adds (ENAS's weighted skip-rate KL), 0
  # without one; REINFORCE adds its mean to the loss.
  penalty: Any = 0.0


@jax.custom_vjp
def _grad_barrier(c):
  """The identity, whose backward pass materialises the cotangent.

  Why: the gradient of the cell state runs backwards through every step by
  elementwise ops only (``dc_t = dc_{t+1} * f_{t+1} + ...``), and in the
  unrolled rollout XLA:CPU fuses that whole chain into each consumer,
  recomputing it once per step: quadratic in the number of decisions (the
  REINFORCE update's backward measured 5x its forward). XLA:CPU drops
  ``optimization_barrier`` before fusion, so the backward multiplies the
  cotangent by the identity matrix instead: a small matrix product, which
  fusion cannot cross (benchmarks/README.md, "Speed against PyTorch").
  """
  return c


def _grad_barrier_fwd(c):
  return c, None


def _grad_barrier_bwd(_, g):
  # HIGHEST: exact on accelerators too, whose default may round to bf16.
  return (jnp.matmul(g, jnp.eye(g.shape[-1], dtype=g.dtype),
                     precision=jax.lax.Precision.HIGHEST),)


_grad_barrier.defvjp(_grad_barrier_fwd, _grad_barrier_bwd)


def _pick(a: jax.Array, rows: list[jax.Array]) -> jax.Array:
  """``rows[a]`` as a sum of selects.

  Why not ``jnp.stack(rows)[a]``: under ``vmap`` that gather's gradient is a
  scatter-add into a zero ``[B, len(rows), H]`` buffer per decision, which
  cost about 15% of the REINFORCE update on XLA:CPU (benchmarks/README.md);
  the selects' gradient is elementwise.
  """
  if not PICK_BY_SELECT:
    return jnp.stack(rows)[a]
  out = jnp.where(a == 0, rows[0], 0.0)
  for k, row in enumerate(rows[1:], 1):
    out = out + jnp.where(a == k, row, 0.0)
  return out


def _lstm_step(w, b, x, state):
  """One LSTM layer step with fused gates (i, f, g, o); ``w: [in+H, 4H]``."""
  c, h = state
  if GRAD_BARRIER:
    c = _grad_barrier(c)
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
    hidden_size: LSTM width (ENAS: 64 for the CNN searches, 100 for the
      RNN cell; NAS-RL: 35).
    num_layers: stacked LSTM layers (NAS-RL: 2; ENAS: 1).
    temperature: logits are divided by it. The authors' CNN searches set
      none (1.0 here); their PTB search uses 5.0.
    tanh_constant: if set, logits become ``c * tanh(logits)`` (ENAS: 1.10
      for the micro search, 1.5 for the macro search, 2.5 for PTB).
    op_tanh_reduce: op logits use ``tanh_constant / op_tanh_reduce`` (ENAS
      CNN searches: 2.5, so micro ops see 0.44).
    op_bias_init: initial value of every op head's learned bias (length =
      the widest op vocabulary), or None for zeros.
    op_bias_fixed: a constant bias added to op logits after the tanh, or
      None.
    op_bias_fixed_prefix: only decisions whose name starts with it get
      ``op_bias_fixed`` ("" = all).
    enas_anchors: the authors' cell-input anchors (see module doc) instead
      of learned ones.
    node_anchor_step: the extra LSTM step that makes a node's anchor.
    enas_skips: the authors' macro skip mechanics (implies
      ``node_anchor_step``).
    skip_target, skip_weight: the skip-rate KL penalty (ENAS: 0.4, 0.8);
      used with ``enas_skips``.
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
  op_tanh_reduce: float = 1.0
  op_bias_init: tuple[float, ...] | None = None
  op_bias_fixed: tuple[float, ...] | None = None
  op_bias_fixed_prefix: str = ""
  enas_anchors: bool = False
  node_anchor_step: bool = False
  enas_skips: bool = False
  skip_target: float = 0.4
  skip_weight: float = 0.0
  # ENAS's PTB controller (ptb_enas_controller.py), unrolled rollout only:
  # pointer logits minus ``penalty * (i - j)^2`` for node i picking j (1/12
  # there), and the picked anchor fed back divided by ``0.1 + (i - j)``.
  pointer_distance_penalty: float = 0.0
  pointer_input_rescale: bool = False
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
    if self.op_bias_init is not None:
      bias = np.asarray(self.op_bias_init, np.float32)
      if bias.shape != (sa.head_size,):
        raise ValueError(f"op_bias_init needs {sa.head_size} values (one "
                         f"per op), got {len(bias)}")
      heads_b_init = lambda k, s: jnp.broadcast_to(jnp.asarray(bias), s)
    else:
      heads_b_init = nn.initializers.zeros
    self.heads_b = self.param("heads_b", heads_b_init,
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

  def _shape_logits(self, logits, is_op: bool = False):
    logits = logits / self.temperature
    if self.tanh_constant is not None:
      c = self.tanh_constant / (self.op_tanh_reduce if is_op else 1.0)
      logits = c * jnp.tanh(logits)
    return logits

  @property
  def _enas_options(self) -> bool:
    return bool(self.op_tanh_reduce != 1.0 or self.op_bias_fixed is not None
                or self.enas_anchors or self.node_anchor_step
                or self.enas_skips or self.pointer_distance_penalty != 0.0
                or self.pointer_input_rescale)

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
    # The ENAS options exist in the unrolled rollout only.
    unroll = (self.unroll if self.unroll is not None
              else T <= UNROLL_MAX or self._enas_options)
    if not unroll and self._enas_options:
      raise ValueError("the ENAS controller options (op_tanh_reduce, "
                       "op_bias_fixed, enas_anchors, node_anchor_step, "
                       "enas_skips, pointer_distance_penalty, "
                       "pointer_input_rescale) need unroll=True or None")
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
    hsz = self.hidden_size
    zeros = jnp.zeros((hsz,))
    lstm = tuple((zeros, zeros) for _ in range(self.num_layers))
    raw: dict[int, jax.Array] = {}
    proj: dict[int, jax.Array] = {}
    pending_init = set(sa.init_anchors)
    if not self.enas_anchors:
      for i, slot in enumerate(sa.init_anchors):
        raw[slot] = self.init_anchor_h[i]
        proj[slot] = raw[slot] @ self.attn_prev
      pending_init.clear()
    anchor_step = self.node_anchor_step or self.enas_skips
    inp, h = self.go, zeros
    arch, logps, ents = [], [], []
    skip_bits, skip_kls = [], []
    t_max = len(sa.kind)
    target = jnp.array([1.0 - self.skip_target, self.skip_target])
    for t in range(t_max):
      kind, nc = int(sa.kind[t]), int(sa.num_choices[t])
      name = self.space.decisions[t].name
      if kind == base.POINTER and pending_init:
        # ENAS: a cell's input anchors are made just before its first
        # pointer: one LSTM step on the go token per input; the anchor is
        # zero and the step's state is its attention key.
        lo = int(sa.attn_base[t])
        for slot in range(lo, lo + nc):
          if slot in pending_init:
            lstm, h_init = self._advance(lstm, self.go)
            raw[slot] = zeros
            proj[slot] = h_init @ self.attn_prev
            pending_init.discard(slot)
      enas_skip = self.enas_skips and kind == base.SKIP
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
        if kind == base.POINTER:
          logits = scores
        elif enas_skip:  # general_controller.py: logits (-q, q)
          logits = jnp.stack([-scores[0], scores[0]])
        else:
          logits = jnp.stack([jnp.zeros(()), scores[0]])
      logits = self._shape_logits(logits, is_op=kind == base.OP)
      if (kind == base.OP and self.op_bias_fixed is not None
          and name.startswith(self.op_bias_fixed_prefix)):
        logits = logits + jnp.asarray(self.op_bias_fixed, jnp.float32)[:nc]
      # i - j for candidate j: node i of the ENAS RNN space points at 0..i-1.
      distance = nc - jnp.arange(nc)
      if kind == base.POINTER and self.pointer_distance_penalty:
        logits = logits - self.pointer_distance_penalty * distance ** 2
      a, logp, ent = self._choose(logits, noise[t],
                                  None if forced is None else forced[t])
      arch.append(a)
      logps.append(logp)
      ents.append(ent)
      if kind == base.POINTER:  # ENAS feeds the picked anchor back in
        inp = _pick(a, [raw[j] for j in slots])
        if self.pointer_input_rescale:
          inp = inp / (0.1 + distance[a])
      else:
        off = int(sa.token_offset[t])
        inp = _pick(a, [self.embedding[off + k] for k in range(nc)])
      if enas_skip:
        p = jax.nn.sigmoid(logits)
        skip_bits.append((a, raw[lo], jnp.sum(p * jnp.log(p / target))))
        last = t + 1 == t_max or int(sa.kind[t + 1]) != base.SKIP
        if last:  # the next layer reads the mean of the chosen anchors
          bits = jnp.stack([b for b, _, _ in skip_bits]).astype(jnp.float32)
          chosen = jnp.stack([r for _, r, _ in skip_bits])
          inp = bits @ chosen / (1.0 + jnp.sum(bits))
          # KL summed over the layer's bits, averaged over layers.
          skip_kls.append(sum(kl for _, _, kl in skip_bits))
          skip_bits = []
      if sa.anchor[t] >= 0:
        slot = int(sa.anchor[t])
        if anchor_step and kind == base.OP:
          # The node's anchor comes from one more step on the op's
          # embedding; the next node starts from the go token (or, in the
          # macro space, from the skips' mean, set above).
          lstm, h = self._advance(lstm, inp)
          inp = self.go
        raw[slot] = h
        proj[slot] = h @ self.attn_prev
    penalty = (self.skip_weight * jnp.mean(jnp.stack(skip_kls)) if skip_kls
               else jnp.zeros(()))
    return Rollout(jnp.stack(arch), jnp.sum(jnp.stack(logps)),
                   jnp.sum(jnp.stack(ents)), log_probs=jnp.stack(logps),
                   penalty=penalty)

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
    return Rollout(arch, jnp.sum(logp), jnp.sum(ent), log_probs=logp,
                   penalty=jnp.zeros(()))

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
