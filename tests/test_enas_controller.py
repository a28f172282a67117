"""The ENAS controller options (lstm_policy) and REINFORCE's ENAS reward
terms, each against values computed by hand: closed forms where the logits
are set to known numbers, and a NumPy re-derivation of the authors'
samplers (micro_controller.py, general_controller.py) for the step order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import algorithms
from nas_jax.controllers import make_controller
from nas_jax.spaces import enas as enas_space
from nas_jax.spaces import registry

MICRO_BIAS_INIT = (0.0, 10.0, 10.0, 0.0, 0.0)
MICRO_BIAS_FIXED = (-0.25, 0.25, 0.25, -0.25, -0.25)


def _logsoftmax(x):
  x = np.asarray(x, np.float64)
  return x - np.log(np.sum(np.exp(x - x.max()))) - x.max()


def _zero(params, *names):
  params = dict(params)
  for k in names:
    params[k] = jnp.zeros_like(params[k])
  return params


def test_op_tanh_reduce_hand_computed():
  space = registry.get("seed003_small")  # two op decisions, 8 ops each
  b = np.linspace(-2.0, 2.0, 8).astype(np.float32)
  for reduce in (1.0, 2.5):
    ctrl = make_controller(space, hidden_size=8, tanh_constant=1.1,
                           op_tanh_reduce=reduce)
    params = _zero(ctrl.init(jax.random.key(0)), "heads_w")
    params["heads_b"] = jnp.broadcast_to(b, params["heads_b"].shape)
    arch = jnp.array([3, 6])
    want = sum(_logsoftmax(1.1 / reduce * np.tanh(b))[a] for a in (3, 6))
    np.testing.assert_allclose(float(jax.jit(ctrl.log_prob)(params, arch)),
                               want, rtol=1e-5)


def test_op_bias_init_sets_every_head():
  space = enas_space.micro_space(2)
  ctrl = make_controller(space, hidden_size=8, op_bias_init=MICRO_BIAS_INIT)
  params = ctrl.init(jax.random.key(0))
  np.testing.assert_array_equal(
      params["heads_b"], np.broadcast_to(MICRO_BIAS_INIT,
                                         params["heads_b"].shape))
  with pytest.raises(ValueError, match="op_bias_init needs 5 values"):
    make_controller(space, op_bias_init=(1.0, 2.0)).init(jax.random.key(0))


def test_op_bias_fixed_normal_cell_only_hand_computed():
  """All learned logits zero: pointers are uniform, ops get only the fixed
  bias, and only in the normal cell (the authors' use_bias=True)."""
  space = enas_space.micro_space(1)  # per cell: in_a, in_b, op_a, op_b
  ctrl = make_controller(space, hidden_size=8, tanh_constant=1.1,
                         op_tanh_reduce=2.5, op_bias_fixed=MICRO_BIAS_FIXED,
                         op_bias_fixed_prefix="normal/")
  params = _zero(ctrl.init(jax.random.key(0)), "heads_w", "heads_b",
                 "attn_v")
  arch = jnp.array([0, 1, 2, 3, 1, 0, 1, 4])
  fixed = _logsoftmax(MICRO_BIAS_FIXED)
  want = (4 * np.log(0.5) + fixed[2] + fixed[3] + 2 * np.log(0.2))
  np.testing.assert_allclose(float(jax.jit(ctrl.log_prob)(params, arch)),
                             want, rtol=1e-5)


# -- NumPy re-derivations of the authors' samplers ----------------------------


def _sig(x):
  return 1.0 / (1.0 + np.exp(-x))


def _lstm(p, x, state):
  c, h = state
  z = np.concatenate([x, h]) @ p["lstm_0_w"] + p["lstm_0_b"]
  i, f, g, o = np.split(z, 4)
  c = _sig(f + 1.0) * c + _sig(i) * np.tanh(g)
  return c, _sig(o) * np.tanh(c)


def _np(params):
  return {k: np.asarray(v, np.float64) for k, v in params.items()}


def _micro_reference(p, arch, num_nodes, tanh_c, reduce):
  """micro_controller.py's _build_sampler, normal then reduce cell (the
  reduce sampler continues from the normal one's LSTM state)."""
  hsz = p["go"].shape[0]
  state = (np.zeros(hsz), np.zeros(hsz))
  lp, t = 0.0, 0
  inp = p["go"]
  for cell in range(2):
    anchors, keys = [], []
    for _ in range(2):  # the cell inputs: zero anchors, keys from go steps
      state = _lstm(p, p["go"], state)
      anchors.append(np.zeros(hsz))
      keys.append(state[1] @ p["attn_w_prev"])
    for _ in range(num_nodes):
      for _ in range(2):  # input pointers
        state = _lstm(p, inp, state)
        q = np.tanh(np.stack(keys) + state[1] @ p["attn_w_curr"]) @ p["attn_v"]
        lp += _logsoftmax(tanh_c * np.tanh(q))[arch[t]]
        inp = anchors[arch[t]]
        t += 1
      for _ in range(2):  # ops
        state = _lstm(p, inp, state)
        logits = state[1] @ p["heads_w"][0] + p["heads_b"][0]
        logits = tanh_c / reduce * np.tanh(logits)
        if cell == 0:
          logits = logits + np.asarray(MICRO_BIAS_FIXED)
        lp += _logsoftmax(logits)[arch[t]]
        inp = p["embedding"][arch[t]]
        t += 1
      state = _lstm(p, inp, state)  # the node's anchor step
      anchors.append(state[1])
      keys.append(state[1] @ p["attn_w_prev"])
      inp = p["go"]
  return lp


def test_enas_micro_controller_matches_the_authors_sampler():
  """op_tanh_reduce + op_bias_init/fixed + enas_anchors + node_anchor_step
  together, against micro_controller.py's step order."""
  space = enas_space.micro_space(2)
  ctrl = make_controller(
      space, hidden_size=8, tanh_constant=1.1, op_tanh_reduce=2.5,
      op_bias_init=MICRO_BIAS_INIT, op_bias_fixed=MICRO_BIAS_FIXED,
      op_bias_fixed_prefix="normal/", enas_anchors=True,
      node_anchor_step=True)
  params = ctrl.init(jax.random.key(0))
  # Spread the weights so every term matters.
  params = jax.tree.map(lambda x: x * 5.0, params)
  keys = jax.random.split(jax.random.key(1), 4)
  rollouts = jax.jit(jax.vmap(ctrl.sample, (None, 0)))(params, keys)
  for arch, lp in zip(np.asarray(rollouts.arch), rollouts.log_prob):
    want = _micro_reference(_np(params), arch, 2, 1.1, 2.5)
    np.testing.assert_allclose(float(lp), want, rtol=2e-4, atol=2e-4)
  # The learned init_anchors are not used: the authors' anchors are zeros.
  moved = dict(params, init_anchors=params["init_anchors"] + 1.0)
  np.testing.assert_allclose(
      jax.jit(ctrl.log_prob)(moved, rollouts.arch[0]), rollouts.log_prob[0],
      rtol=1e-6)


def _macro_reference(p, arch, num_layers, tanh_c, target, weight):
  """general_controller.py's sampler (search_whole_channels)."""
  hsz = p["go"].shape[0]
  state = (np.zeros(hsz), np.zeros(hsz))
  lp, t, inp = 0.0, 0, p["go"]
  anchors, keys, kls = [], [], []
  tgt = np.array([1.0 - target, target])
  for i in range(num_layers):
    state = _lstm(p, inp, state)
    logits = tanh_c * np.tanh(state[1] @ p["heads_w"][0] + p["heads_b"][0])
    lp += _logsoftmax(logits)[arch[t]]
    inp = p["embedding"][arch[t]]
    t += 1
    state = _lstm(p, inp, state)
    if i > 0:
      q = np.tanh(np.stack(keys) + state[1] @ p["attn_w_curr"]) @ p["attn_v"]
      kl = 0.0
      bits = arch[t:t + i]
      for j in range(i):
        logit = tanh_c * np.tanh(np.array([-q[j], q[j]]))
        lp += _logsoftmax(logit)[bits[j]]
        pr = _sig(logit)
        kl += np.sum(pr * np.log(pr / tgt))
      kls.append(kl)
      t += i
      inp = (bits @ np.stack(anchors)) / (1.0 + bits.sum())
    else:
      inp = p["go"]
    anchors.append(state[1])
    keys.append(state[1] @ p["attn_w_prev"])
  return lp, weight * np.mean(kls)


def test_enas_macro_skips_match_the_authors_sampler():
  space = enas_space.macro_space(4)
  ctrl = make_controller(space, hidden_size=8, tanh_constant=1.5,
                         enas_skips=True, skip_target=0.4, skip_weight=0.8)
  params = jax.tree.map(lambda x: x * 5.0, ctrl.init(jax.random.key(2)))
  keys = jax.random.split(jax.random.key(3), 4)
  r = jax.jit(jax.vmap(ctrl.sample, (None, 0)))(params, keys)
  for arch, lp, pen in zip(np.asarray(r.arch), r.log_prob, r.penalty):
    want_lp, want_pen = _macro_reference(_np(params), arch, 4, 1.5, 0.4, 0.8)
    np.testing.assert_allclose(float(lp), want_lp, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(float(pen), want_pen, rtol=2e-4, atol=1e-6)
  # Re-scoring gives the same log-probability and penalty.
  re = jax.jit(jax.vmap(ctrl.rescore, (None, 0)))(params, r.arch)
  np.testing.assert_allclose(re.log_prob, r.log_prob, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(re.penalty, r.penalty, rtol=1e-5, atol=1e-6)


def test_skip_penalty_closed_form_and_in_the_reinforce_loss():
  """Zero attention: every skip probability is 1/2, so each bit's KL is
  0.5 log(0.5 / 0.6) + 0.5 log(0.5 / 0.4); layer i has i bits; the penalty
  is 0.8 x the mean over layers 1..3 of the per-layer sums. With one child
  the first REINFORCE advantage is 0, so the loss is exactly the penalty."""
  space = enas_space.macro_space(4)
  ctrl = make_controller(space, hidden_size=8, tanh_constant=1.5,
                         enas_skips=True, skip_target=0.4, skip_weight=0.8)
  bit = 0.5 * np.log(0.5 / 0.6) + 0.5 * np.log(0.5 / 0.4)
  want = 0.8 * np.mean([1 * bit, 2 * bit, 3 * bit])
  algo = algorithms.reinforce(ctrl, batch_size=1, entropy_weight=1e-4,
                              entropy_in_reward=True)
  state = jax.jit(algo.init)(jax.random.key(0))
  state = state._replace(params=_zero(state.params, "attn_v"))
  arch = jnp.zeros((1, space.num_decisions), jnp.int32)
  np.testing.assert_allclose(
      float(jax.jit(ctrl.rescore)(state.params, arch[0]).penalty), want,
      rtol=1e-5)
  state = jax.jit(algo.feedback)(state, arch, jnp.array([0.7]))
  np.testing.assert_allclose(float(state.loss), want, rtol=1e-5)


@pytest.mark.parametrize("in_reward", [False, True])
def test_entropy_in_reward_hand_computed(in_reward):
  """Uniform policy (all logits zero): each child's entropy is
  H = sum_t log(num_choices_t). In-reward, the first baseline is
  mean(R) + w H (the entropy is part of the reward); as a loss term it is
  mean(R), and the loss carries -w H."""
  space = registry.get("seed003_small")
  ctrl = make_controller(space, hidden_size=8)
  w = 0.3
  algo = algorithms.reinforce(ctrl, batch_size=2, entropy_weight=w,
                              entropy_in_reward=in_reward,
                              baseline_decay=0.5)
  state = jax.jit(algo.init)(jax.random.key(0))
  state = state._replace(params=_zero(state.params, "heads_w", "heads_b"))
  H = 2 * np.log(8)
  archs = jnp.array([[0, 1], [2, 3]])
  rewards = jnp.array([0.2, 0.6])
  new = jax.jit(algo.feedback)(state, archs, rewards)
  # Advantages are (-0.2, +0.2) either way (the entropies are equal).
  pg = np.mean([0.2 * 2 * np.log(1 / 8), -0.2 * 2 * np.log(1 / 8)])
  if in_reward:
    np.testing.assert_allclose(float(new.baseline), 0.4 + w * H, rtol=1e-5)
    np.testing.assert_allclose(float(new.loss), pg, atol=1e-6)
  else:
    np.testing.assert_allclose(float(new.baseline), 0.4, rtol=1e-5)
    np.testing.assert_allclose(float(new.loss), pg - w * H, rtol=1e-5)
  np.testing.assert_allclose(float(new.entropy), H, rtol=1e-5)


def test_options_need_the_unrolled_rollout():
  space = enas_space.micro_space(1)
  ctrl = make_controller(space, hidden_size=8, enas_anchors=True,
                         unroll=False)
  params = ctrl.init(jax.random.key(0))
  with pytest.raises(ValueError, match="need unroll=True or None"):
    ctrl.sample(params, jax.random.key(1))
