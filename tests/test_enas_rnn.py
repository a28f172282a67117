"""The ENAS shared recurrent cell and the language model around it."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.children import enas_rnn, lm
from nas_jax.data import ptb
from nas_jax.spaces import enas, registry
from nas_jax.spaces.base import InvalidArchitectureError


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


_NP_ACTS = (np.tanh, lambda x: np.maximum(x, 0), lambda x: x, _sigmoid)


def _numpy_cell(params, arch, xs, h):
  """Independent reference: the highway formulas, node by node, step by
  step (Pham et al. 2018 Sec. 2.1; authors' _rhn_enas without batch norm)."""
  w_in = np.asarray(params["w_in"], np.float64)
  bank = np.asarray(params["w_shared"], np.float64)
  H = h.shape[1]
  n = (len(arch) + 1) // 2
  ys = []
  for t in range(xs.shape[1]):
    z = np.concatenate([xs[:, t], h], 1) @ w_in
    c, g = _sigmoid(z[:, :H]), _NP_ACTS[arch[0]](z[:, H:])
    nodes = [c * g + (1 - c) * h]
    for i in range(1, n):
      j, f = arch[2 * i - 1], arch[2 * i]
      z = nodes[j] @ bank[i * (i - 1) // 2 + j]
      c, g = _sigmoid(z[:, :H]), _NP_ACTS[f](z[:, H:])
      nodes.append(c * g + (1 - c) * nodes[j])
    used = {arch[2 * i - 1] for i in range(1, n)}
    h = np.mean([nodes[k] for k in range(n) if k not in used], 0)
    ys.append(h)
  return np.stack(ys, 1), h


def test_text_form_round_trips_and_names_the_paper_cell():
  space = enas.rnn_space(12)
  rng = jax.random.split(jax.random.key(0), 20)
  for k in rng:
    a = np.asarray(space.sample_uniform(k))
    text = space.to_text(a)
    assert text.count(";") == 11
    np.testing.assert_array_equal(space.from_text(text), a)
  cell = enas.named_rnn_cell("enas_rnn_paper")
  assert space.to_text(cell) == enas.PTB_CELL
  np.testing.assert_array_equal(
      space.from_text(enas.PTB_CELL_FIXED_ARC), cell)
  acts, prevs, loose = enas_rnn.decode(cell)
  assert int(loose.sum()) == 6  # six loose ends averaged (Fig. 6)
  assert set(acts.tolist()) == {0, 1}  # only tanh and ReLU


@pytest.mark.parametrize("text, match", [
    ("tanh;0:relu", "2 ';'-separated nodes, expected 3"),
    ("tanh;0:relu;2:tanh", "node2/prev.*out of range 0..1"),
    ("tanh;0:relu;1:gelu", "unknown choice 'gelu'.*tanh, relu"),
    ("tanh;0:relu;1-tanh", "expected 'prev:activation'"),
])
def test_invalid_dag_codes_are_clear_errors(text, match):
  with pytest.raises(InvalidArchitectureError, match=match):
    enas.rnn_space(3).from_text(text)


def test_shared_cell_matches_the_formulas_for_every_arch_with_one_program():
  H, N, B, T = 5, 4, 3, 4
  space = registry.get("enas_rnn", num_nodes=N)
  cell = enas_rnn.ENASCell(hidden_size=H, num_nodes=N)
  xs = jax.random.normal(jax.random.key(1), (B, T, H))
  h0 = jax.random.normal(jax.random.key(2), (B, H))
  arch0 = space.sample_uniform(jax.random.key(0))
  params = cell.init(jax.random.key(3), xs, h0, arch0)["params"]
  assert params["w_shared"].shape == (6, H, 2 * H)  # one pair per (i, j)
  apply = jax.jit(lambda p, a: cell.apply({"params": p}, xs, h0, a))
  outs = []
  for k in range(6):
    arch = np.asarray(space.sample_uniform(jax.random.key(10 + k)))
    ys, hT = apply(params, arch)
    ref_ys, ref_h = _numpy_cell(params, arch, np.asarray(xs, np.float64),
                                np.asarray(h0, np.float64))
    np.testing.assert_allclose(ys, ref_ys, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hT, ref_h, rtol=1e-4, atol=1e-5)
    outs.append(np.asarray(hT))
    # The same cell built statically, with its own pairs copied in.
    fixed = enas_rnn.ENASCell(H, N, fixed_arch=tuple(arch.tolist()))
    own = np.stack([params["w_shared"][i * (i - 1) // 2 + arch[2 * i - 1]]
                    for i in range(1, N)])
    ys_f, _ = fixed.apply({"params": {"w_in": params["w_in"],
                                      "w_nodes": own}}, xs, h0, None)
    np.testing.assert_allclose(ys_f, ys, rtol=1e-5, atol=1e-6)
  assert apply._cache_size() == 1  # one compilation for every cell
  assert len({o.round(4).tobytes() for o in outs}) == 6


def _model(V=12, H=6, N=4, **keep):
  return lm.LanguageModel(vocab_size=V, cell=enas_rnn.ENASCell(H, N), **keep)


def test_training_shares_weights_between_children():
  """A step on child A moves exactly the pairs A uses (sharing is real: a
  child B with one of those edges computes something new) and no other."""
  space = registry.get("enas_rnn", num_nodes=4)
  model = _model()
  tx = lm.make_optimizer(0.5, grad_clip=0)
  step = jax.jit(lm.make_train_step(model, tx))
  a = space.from_text("tanh;0:relu;1:tanh;1:sigmoid")   # edges 0>1, 1>2, 1>3
  b = space.from_text("relu;0:identity;1:tanh;0:relu")  # shares 1>2 only
  state = lm.init_state(model, tx, jax.random.key(0), 2, a)
  s = ptb.batchify(ptb.synthetic(12, 400).train, 2)
  w = ptb.window(s, 0, 8)
  batch = lm.Batch(w.inputs, w.targets, w.mask, jnp.float32(1))
  new, _ = step(state, a, batch, jax.random.key(1))
  moved = np.abs(np.asarray(new.params["cell"]["w_shared"]
                            - state.params["cell"]["w_shared"])).sum((1, 2))
  used_a = [enas_rnn.pair_index(i, int(a[2 * i - 1])) for i in (1, 2, 3)]
  assert set(np.flatnonzero(moved > 0).tolist()) == set(used_a)
  for name in ("w_in",):
    assert not np.allclose(new.params["cell"][name],
                           state.params["cell"][name])
  ev = jax.jit(lm.make_eval_step(model))
  before = ev(state.params, model.zero_carry(2), b, w.inputs, w.targets,
              w.mask)[0]
  after = ev(new.params, model.zero_carry(2), b, w.inputs, w.targets,
             w.mask)[0]
  assert float(before) != float(after)
  # One compiled train step for both children.
  step(new, b, batch, jax.random.key(2))
  assert step._cache_size() == 1


def test_perplexity_equals_hand_computed_value_on_a_toy_model():
  """V=2, H=1, one node, identity activation, gate 0.5: h_t = 0.5 h + x_t
  with embeddings +1 / -1 and tied logits [h, -h]. Stream 0 1 1 0 (one
  stream), bptt 2: windows (0..1) and the short last one, carry across.
  h1 = 1 -> p(1) = sigmoid(-2); h2 = -0.5 -> p(1) = sigmoid(1);
  h3 = -1.25 -> p(0) = sigmoid(-2.5)."""
  model = lm.LanguageModel(vocab_size=2,
                           cell=enas_rnn.ENASCell(hidden_size=1, num_nodes=1))
  arch = np.array([2], np.int32)  # identity
  params = {"embedding": jnp.array([[1.0], [-1.0]]),
            # rows: [x, h]; columns: [gate, candidate]
            "cell": {"w_in": jnp.array([[0.0, 2.0], [0.0, 0.0]]),
                     "w_shared": jnp.zeros((1, 1, 2))}}
  stream = np.array([[0, 1, 1, 0]], np.int32)
  ev = jax.jit(lm.make_eval_step(model))
  got = lm.evaluate(ev, params, arch, stream, 2, model.zero_carry(1))
  nll = -(math.log(_sigmoid(-2.0)) + math.log(_sigmoid(1.0))
          + math.log(_sigmoid(-2.5)))
  assert got.num_tokens == 3
  np.testing.assert_allclose(got.nll_sum, nll, rtol=1e-6)
  np.testing.assert_allclose(got.perplexity, math.exp(nll / 3), rtol=1e-6)
  # Windows of 1 and of 3 give the same exact value (carried state).
  for bptt in (1, 3):
    np.testing.assert_allclose(
        lm.evaluate(ev, params, arch, stream, bptt,
                    model.zero_carry(1)).perplexity,
        math.exp(nll / 3), rtol=1e-6)
  with pytest.raises(ValueError, match="BPTT length 4 is longer"):
    lm.evaluate(ev, params, arch, stream, 4, model.zero_carry(1))


def test_training_lowers_perplexity_on_the_synthetic_stream():
  corpus = ptb.synthetic(16, 3000, seed=1)
  model = lm.LanguageModel(16, lm.LSTMCell(16))
  tx = lm.make_optimizer(1.0, grad_clip=1.0)
  step = jax.jit(lm.make_train_step(model, tx))
  state = lm.init_state(model, tx, jax.random.key(0), 8, None)
  ev = jax.jit(lm.make_eval_step(model))
  s = ptb.batchify(corpus.train, 8)
  val = ptb.batchify(corpus.valid, 4)
  before = lm.evaluate(ev, state.params, None, val, 10, model.zero_carry(4))
  for epoch in range(3):
    for i, (a, n) in enumerate(ptb.fixed_windows(s.shape[1], 20, drop_last=True)):
      w = ptb.window(s, a, n)
      state, m = step(state, None, lm.Batch(w.inputs, w.targets, w.mask,
                                            jnp.float32(i == 0)),
                      jax.random.key(epoch * 1000 + i))
  after = lm.evaluate(ev, state.params, None, val, 10, model.zero_carry(4))
  assert before.perplexity > 14 and after.perplexity < 0.7 * before.perplexity


def test_ptb_controller_options_distance_penalty_and_rescaling():
  from nas_jax.controllers import make_controller
  space = enas.rnn_space(3)
  # All-zero params: every shaped logit is 0, so only the penalty remains.
  ctrl = make_controller(space, hidden_size=8, init_scale=0.0,
                         temperature=5.0, tanh_constant=2.5,
                         pointer_distance_penalty=1 / 12)
  params = ctrl.init(jax.random.key(0))
  arch = space.from_text("tanh;0:relu;0:tanh")  # node 2 picks node 0: i-j=2
  pen = np.array([-4 / 12, -1 / 12])
  log_p2 = pen[0] - np.log(np.exp(pen).sum())
  np.testing.assert_allclose(ctrl.log_prob(params, arch),
                             3 * np.log(0.25) + log_p2, rtol=1e-6)
  # Rescaling changes what later decisions see; sampling and re-scoring
  # agree with both options on.
  on = make_controller(space, hidden_size=8, pointer_distance_penalty=1 / 12,
                       pointer_input_rescale=True)
  off = make_controller(space, hidden_size=8)
  p = on.init(jax.random.key(1))
  r = on.sample(p, jax.random.key(2))
  np.testing.assert_allclose(on.log_prob(p, r.arch), r.log_prob, rtol=1e-5)
  assert abs(float(on.log_prob(p, arch)) - float(off.log_prob(p, arch))) > 1e-4


def test_remat_changes_nothing_but_memory():
  H, N = 4, 4
  space = registry.get("enas_rnn", num_nodes=N)
  arch = space.sample_uniform(jax.random.key(5))
  xs = jax.random.normal(jax.random.key(1), (2, 3, H))
  h0 = jnp.zeros((2, H))
  base = enas_rnn.ENASCell(H, N)
  params = base.init(jax.random.key(0), xs, h0, arch)["params"]

  def grads(cell):
    return jax.grad(lambda p: jnp.sum(
        cell.apply({"params": p}, xs, h0, arch)[0] ** 2))(params)

  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               grads(enas_rnn.ENASCell(H, N, remat=True)), grads(base))


def test_a_non_finite_window_skips_its_update_and_resets_the_state():
  model = _model()
  tx = lm.make_optimizer(1.0)
  step = jax.jit(lm.make_train_step(model, tx))
  arch = registry.get("enas_rnn", num_nodes=4).from_text(
      "identity;0:identity;1:relu;2:identity")
  state = lm.init_state(model, tx, jax.random.key(0), 2, arch)
  s = ptb.batchify(ptb.synthetic(12, 400).train, 2)
  w = ptb.window(s, 0, 8)
  batch = lm.Batch(w.inputs, w.targets, w.mask, jnp.float32(0))
  bad = state._replace(carry=jnp.full((2, 6), jnp.inf))
  new, m = step(bad, arch, batch, jax.random.key(1))
  assert float(m["skipped"]) == 1.0
  jax.tree.map(np.testing.assert_array_equal, new.params, state.params)
  np.testing.assert_array_equal(new.carry, 0.0)
  new, m = step(state, arch, batch, jax.random.key(1))
  assert float(m["skipped"]) == 0.0


def test_hidden_norm_clipping_bounds_the_state():
  H = 6
  cell = enas_rnn.ENASCell(H, 4, max_hidden_norm=0.5)
  arch = registry.get("enas_rnn", num_nodes=4).from_text(
      "identity;0:identity;1:identity;2:identity")
  xs = jax.random.normal(jax.random.key(0), (3, 5, H))
  params = cell.init(jax.random.key(1), xs, jnp.zeros((3, H)), arch)
  params = jax.tree.map(lambda w: 30 * w, params)  # a growing state
  free, _ = enas_rnn.ENASCell(H, 4).apply(params, xs, jnp.zeros((3, H)), arch)
  ys, h = cell.apply(params, xs, jnp.zeros((3, H)), arch)
  assert np.linalg.norm(np.asarray(free), axis=-1).max() > 2.0
  norms = np.linalg.norm(np.asarray(ys), axis=-1)
  assert norms.max() <= 0.5 + 1e-5 and norms.min() > 0.49
