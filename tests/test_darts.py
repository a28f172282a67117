"""DARTS (issue 11, item 4): the mixed op against its hand-weighted sum, the
first- and second-order architecture gradients on a toy bilevel problem
against finite differences of the true one-step unrolled objective, one
optimiser step by hand, the derive rules, config errors, and the binary's
tiny run with SIGKILL-and-resume giving the uninterrupted run's bits."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from nas_jax.algorithms import darts as darts_lib
from nas_jax.children import darts_supernet as ds
from nas_jax.spaces import enas as enas_space
from nas_jax.spaces import nasbench201
from nas_jax.spaces import registry
from nas_jax.train import darts_run

import test_resume

BN_SCALE = 1.0 / np.sqrt(1.0 + 1e-5)  # eval-mode BN at its initial stats


def _avg_pool_3x3(x):
  """Stride-1 SAME 3x3 average over the valid pixels only, by loops."""
  b, h, w, c = x.shape
  out = np.zeros_like(x)
  for i in range(h):
    for j in range(w):
      win = x[:, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2, :]
      out[:, i, j, :] = win.mean(axis=(1, 2))
  return out


def test_mixed_op_is_the_hand_weighted_sum_of_its_ops():
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 4, 4, 3)))
  op = ds.MixedOp(nasbench201.OPS, 3)
  # "none" holds most of the weight: it scales the others down, adds 0.
  weights = jnp.array([0.4, 0.1, 0.2, 0.25, 0.05])
  variables = op.init(jax.random.key(1), x, weights, False)
  got = np.asarray(op.apply(variables, x, weights, False))
  p = variables["params"]
  assert sorted(p) == ["ops_1", "ops_2"]  # skip and pool have no weights
  relu = np.maximum(x, 0.0)
  k1 = np.asarray(p["ops_1"]["Conv_0"]["kernel"])  # [1, 1, 3, 3]
  conv1 = np.einsum("bhwc,cd->bhwd", relu, k1[0, 0]) * BN_SCALE
  k3 = np.asarray(p["ops_2"]["Conv_0"]["kernel"])  # [3, 3, 3, 3]
  padded = np.pad(relu, ((0, 0), (1, 1), (1, 1), (0, 0)))
  conv3 = sum(np.einsum("bhwc,cd->bhwd", padded[:, i:i + 4, j:j + 4],
                        k3[i, j]) for i in range(3) for j in range(3))
  conv3 = conv3 * BN_SCALE
  want = (0.1 * x + 0.2 * conv1 + 0.25 * conv3 + 0.05 * _avg_pool_3x3(x))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # All weight on "none": the zero op.
  zero = op.apply(variables, x, jnp.array([1.0, 0, 0, 0, 0]), False)
  np.testing.assert_array_equal(np.asarray(zero), 0.0)
  with pytest.raises(ValueError, match="weights of shape"):
    op.apply(variables, x, weights[:4], False)


def test_supernets_take_alpha_as_an_input_and_every_op_gets_a_gradient():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  # One stage: the micro net then has no reduction cell, so alpha["reduce"]
  # gets no gradient and alpha["normal"] a gradient on every edge.
  for space, kw in (("nasbench201", {"num_reductions": 0}),
                    ("enas_micro", {"num_nodes": 1, "num_reductions": 0})):
    net = ds.make_network(space, channels=2, num_classes=3, **kw)
    alpha = ds.init_alpha(space, jax.random.key(1), num_nodes=1)
    v = jax.jit(net.init, static_argnums=3)(jax.random.key(2), x, alpha,
                                            False)

    def loss(a, v=v, net=net):
      logits, _ = net.apply(v, x, a, True, mutable=["batch_stats"])
      return jnp.sum(logits ** 2)

    g = jax.jit(jax.grad(loss))(alpha)
    if space == "enas_micro":
      np.testing.assert_array_equal(g.pop("reduce"), 0.0)
    for leaf in jax.tree.leaves(g):
      assert leaf.shape[-1] == 5 and np.all(np.isfinite(leaf))
      assert np.all(np.any(np.asarray(leaf) != 0, axis=-1)), space
  with pytest.raises(ValueError, match="no DARTS supernet"):
    ds.make_network("nasnet")


# -- the bilevel gradients on a toy problem ---------------------------------


def _toy_loss(params, model_state, alpha, batch):
  """Least squares through alpha's softmax: quadratic in w (so Eq. 8's
  central difference is exact), non-linear in alpha."""
  x, y = batch
  pred = x @ (params["w"] * jax.nn.softmax(alpha)) + params["b"]
  return jnp.mean((pred - y) ** 2) + 0.1 * jnp.sum(alpha ** 2), model_state


def _toy():
  rng = np.random.default_rng(0)
  w = {"w": rng.normal(size=4), "b": np.float64(0.3)}
  alpha = rng.normal(size=4)
  train = (rng.normal(size=(8, 4)), rng.normal(size=8))
  val = (rng.normal(size=(6, 4)), rng.normal(size=6))
  return w, alpha, train, val


def _fd(f, a, h=1e-5):
  """Central finite differences of the scalar ``f`` at ``a``."""
  out = np.zeros_like(a)
  for i in range(a.size):
    e = np.zeros_like(a)
    e[i] = h
    out[i] = (f(a + e) - f(a - e)) / (2 * h)
  return out


def test_first_and_second_order_gradients_match_finite_differences():
  with jax.enable_x64(True):
    w, alpha, train, val = _toy()
    xi = 0.7

    def unrolled(a):  # the true objective L_val(w - xi grad_w L_train, a)
      g = jax.grad(lambda p: _toy_loss(p, None, a, train)[0])(w)
      w1 = jax.tree.map(lambda p, d: p - xi * d, w, g)
      return float(_toy_loss(w1, None, a, val)[0])

    second, loss2 = darts_lib.second_order_arch_grad(
        _toy_loss, w, None, jnp.asarray(alpha), train, val, xi)
    np.testing.assert_allclose(second, _fd(unrolled, alpha), rtol=1e-7,
                               atol=1e-9)
    np.testing.assert_allclose(loss2, unrolled(alpha), rtol=1e-12)
    first, loss1 = darts_lib.first_order_arch_grad(_toy_loss, w, None,
                                                   jnp.asarray(alpha), val)
    np.testing.assert_allclose(
        first, _fd(lambda a: float(_toy_loss(w, None, a, val)[0]), alpha),
        rtol=1e-7, atol=1e-9)
    # The two differ (the unrolled term matters), and xi = 0 reduces the
    # second-order gradient to the first-order one (Eq. 6).
    assert np.max(np.abs(np.asarray(second) - np.asarray(first))) > 1e-2
    zero, _ = darts_lib.second_order_arch_grad(
        _toy_loss, w, None, jnp.asarray(alpha), train, val, 0.0)
    np.testing.assert_allclose(zero, first, rtol=1e-12)
    del loss1


def test_one_step_updates_alpha_on_val_then_w_on_train():
  with jax.enable_x64(True):
    w, alpha, train, val = _toy()
    lr_w, lr_a, xi = 0.1, 0.05, 0.2
    for order in (1, 2):
      algo = darts_lib.darts(_toy_loss, optax.sgd(lr_w), optax.sgd(lr_a),
                             order=order, xi=xi)
      state, m = jax.jit(algo.step)(algo.init(w, {}, jnp.asarray(alpha)),
                                    train, val)
      g_a, _ = (darts_lib.first_order_arch_grad(_toy_loss, w, None, alpha,
                                                val) if order == 1 else
                darts_lib.second_order_arch_grad(_toy_loss, w, None, alpha,
                                                 train, val, xi))
      alpha1 = alpha - lr_a * np.asarray(g_a)
      g_w = jax.grad(lambda p: _toy_loss(p, None, alpha1, train)[0])(w)
      np.testing.assert_allclose(state.alpha, alpha1, rtol=1e-10)
      np.testing.assert_allclose(state.params["w"], w["w"] - lr_w * g_w["w"],
                                 rtol=1e-10)
      assert int(state.step) == 1 and float(m["train_loss"]) > 0


def test_bad_order_and_xi_are_refused():
  with pytest.raises(ValueError, match="order must be 1"):
    darts_lib.darts(_toy_loss, optax.sgd(0.1), optax.sgd(0.1), order=3)
  with pytest.raises(ValueError, match="xi"):
    darts_lib.darts(_toy_loss, optax.sgd(0.1), optax.sgd(0.1), order=2,
                    xi=-1.0)


# -- derive --------------------------------------------------------------------


def test_derive_nb201_takes_the_argmax_op_but_never_none():
  alpha = np.zeros((6, 5), np.float32)
  alpha[0] = [5.0, 1.0, 2.0, 0.0, 0.0]   # none strongest -> nor_conv_1x1
  alpha[1] = [0.0, 3.0, 0.0, 0.0, 0.0]   # skip_connect
  alpha[2] = [0.0, 0.0, 0.0, 0.0, 4.0]   # avg_pool_3x3
  alpha[3] = [0.0, 0.0, 0.0, 1.0, 1.0]   # tie: the first (nor_conv_3x3)
  # rows 4, 5 all equal: the first non-none op, skip_connect
  arch = ds.derive("nasbench201", alpha)
  np.testing.assert_array_equal(arch, [2, 1, 4, 3, 1, 1])
  assert registry.get("nasbench201").to_text(arch) == (
      "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|nor_conv_3x3~0|"
      "skip_connect~1|skip_connect~2|")


def test_derive_micro_keeps_the_top_two_edges_per_node():
  # 2 nodes: node 0 has edges from slots 0, 1; node 1 from 0, 1, 2.
  assert ds.micro_edges(2) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
  a = np.zeros((5, 5), np.float32)
  a[0] = [0, 2, 0, 0, 0]     # node0 <- 0: sep_conv_3x3 (weak)
  a[1] = [0, 0, 0, 0, 6]     # node0 <- 1: max_pool_3x3 (strong)
  a[2] = [3, 0, 0, 0, 0]     # node1 <- 0: identity (medium)
  a[3] = [0, 0, 0, 0, 0]     # node1 <- 1: uniform (weakest): dropped
  a[4] = [0, 0, 7, 0, 0]     # node1 <- 2 (node 0): sep_conv_5x5 (strongest)
  cell = ds.derive_micro_cell(a, 2)
  # Per node: input_a, input_b (strongest first), op_a, op_b.
  np.testing.assert_array_equal(cell, [1, 0, 4, 1, 2, 0, 2, 0])
  arch = ds.derive("enas_micro", {"normal": a, "reduce": a}, num_nodes=2)
  space = enas_space.micro_space(num_nodes=2)
  np.testing.assert_array_equal(space.validate(arch), np.tile(cell, 2))


# -- config and the binary -----------------------------------------------------


def _config(variant="tiny"):
  config = test_resume.ROOT / "experiments" / "configs" / "darts.py"
  import runpy  # noqa: PLC0415
  return runpy.run_path(str(config))["get_config"](variant)


@pytest.mark.parametrize("field,value,match", [
    ("arch.learning_rate", -1.0, "arch.learning_rate must be"),
    ("space", "nasnet", "space must be one of"),
    ("order", 3, "order must be an integer in 1..2"),
    ("order", 1.0, "order must be an integer"),
    ("weights.lr_min", 1.0, "weights.lr_min must be <= weights.learning_rate"),
    ("network.num_reductions", 4, "network.num_reductions"),
])
def test_bad_config_names_the_dotted_field(field, value, match):
  config = ml_collections.ConfigDict(_config().to_dict(), type_safe=False)
  node = config
  *parents, leaf = field.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=match):
    darts_run.check_config(config)


def test_every_variant_passes_its_checks_and_every_field_has_a_rule():
  from nas_jax import config_check as cc  # noqa: PLC0415
  import runpy  # noqa: PLC0415
  mod = runpy.run_path(str(test_resume.ROOT / "experiments" / "configs" /
                           "darts.py"))
  for v in mod["VARIANTS"]:
    config = mod["get_config"](v)
    darts_run.check_config(config)
    assert cc.unruled(config, darts_run.SCHEMA) == [], v


def test_binary_refuses_a_bad_field_in_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "experiments/main.py", f"--workdir={tmp_path / 'w'}",
       "--config=experiments/configs/darts.py:tiny",
       "--config.arch.learning_rate=-0.1"], cwd=test_resume.ROOT,
      env=test_resume._env(), capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert "arch.learning_rate must be a finite number > 0" in proc.stderr
  assert not (tmp_path / "w").exists()


EPOCHS = 10
# First order here; the second order runs end to end in the benchmark's
# --quick mode (tests/test_benchmarks.py), and its gradient is checked above.
OVERRIDES = {"num_epochs": EPOCHS, "order": 1, "network.channels": 2,
             "network.num_reductions": 0, "data.max_train": 32}
ARGS = ["--config=experiments/configs/darts.py:tiny",
        *(f"--config.{k}={v}" for k, v in OVERRIDES.items())]


def test_tiny_run_of_the_binary_survives_sigkill_exactly(tmp_path):
  # The reference in this process; the binary is then killed after a
  # checkpoint and resumed, and must write the same bits.
  config = _config()
  config.update_from_flattened_dict(OVERRIDES)
  ref = tmp_path / "ref"
  summary = darts_run.run(config, str(ref))
  assert summary["status"] == "done" and summary["order"] == 1
  assert summary["steps"] == EPOCHS  # 32 images, batch 32
  history = (ref / "history.jsonl").read_text()
  lines = [json.loads(l) for l in history.splitlines()]
  assert [l["step"] for l in lines] == list(range(-1, EPOCHS))
  space = registry.get("nasbench201")
  for l in lines:
    space.from_text(l["arch"])
    np.testing.assert_allclose(np.sum(l["weights"], axis=1), 1.0, atol=1e-5)
  # alpha moves away from its near-uniform start.
  assert lines[-1]["weights"] != lines[0]["weights"]
  for f in ("config.json", "best.json", "best_arch.png", "search_curve.png",
            "alpha_trajectory.png", "summary.json", "metrics.jsonl"):
    assert (ref / f).is_file(), f
  best = json.loads((ref / "best.json").read_text())
  assert best["text"] == lines[-1]["arch"]
  assert best["parameter_free_edges"] == sum(
      op in ("skip_connect", "avg_pool_3x3")
      for op in best["spec"]["choices"].values())
  assert "test_acc_200ep" not in best  # tiny: table_path "off"

  run = tmp_path / "run"
  assert test_resume._kill_and_resume(ARGS, run, tmp_path, kills=1,
                                      seed=2) >= 1
  assert (run / "history.jsonl").read_text() == history
  assert json.loads((run / "best.json").read_text()) == best
  assert [m["step"] for m in test_resume.metrics.read_jsonl(
      run / "metrics.jsonl")] == list(range(EPOCHS))
