"""The NAS-RL tree-structured recurrent cell: space, decoding, cell."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from nas_jax import viz
from nas_jax.children import rnn_tree_cell
from nas_jax.spaces import nasrl_rnn, registry
from nas_jax.spaces.base import InvalidArchitectureError

# The seeds' worked example (Zoph & Le 2017 Fig. 5, seed 002), transcribed
# with "*" for both the weight product and the element-wise product.
SEED_FORMULAS = [
    "a_0 = tanh(W_1 * x_t + W_2 * h_{t-1})",
    "a_0_new = relu(a_0 + c_{t-1})",
    "a_1 = relu((W_3 * x_t) * (W_4 * h_{t-1}))",
    "a_2 = sigmoid(a_0_new * a_1)",
    "h_t = a_2",
    "c_t = (W_3 * x_t) * (W_4 * h_{t-1})",
]


def test_worked_example_decodes_exactly():
  space = registry.get("nasrl_rnn", base=2)
  assert space.num_decisions == 3 * 2 + 2 + 2
  names = [d.name for d in space.decisions]
  assert names == ["node0/combine", "node0/act", "node1/combine", "node1/act",
                   "node2/combine", "node2/act", "inject/combine",
                   "inject/act", "cell_index/c_out", "cell_index/inject_at"]
  # The controller's predictions, in order (seed 002).
  arch = space.from_spec({"choices": {
      "node0/combine": "add", "node0/act": "tanh",
      "node1/combine": "elem_mult", "node1/act": "relu",
      "node2/combine": "elem_mult", "node2/act": "sigmoid",
      "inject/combine": "add", "inject/act": "relu",
      "cell_index/c_out": "1", "cell_index/inject_at": "0"}})
  assert space.formulas(arch) == SEED_FORMULAS
  d = space.decode(arch)
  assert d["inject"] == ("add", "relu")
  assert (d["c_out"], d["inject_at"]) == (1, 0)
  assert space.to_text(arch) == nasrl_rnn.WORKED_EXAMPLE
  np.testing.assert_array_equal(space.from_text(nasrl_rnn.WORKED_EXAMPLE),
                                arch)


def test_base8_tree_shape_and_text_round_trip():
  space = registry.get("nasrl_rnn", base=8)
  assert space.num_tree_nodes == 15 and space.num_decisions == 34
  assert space.children == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9),
                            (10, 11), (12, 13)]
  assert all(d.group is None for d in space.decisions)  # own softmax each
  for k in jax.random.split(jax.random.key(0), 10):
    a = np.asarray(space.sample_uniform(k))
    np.testing.assert_array_equal(space.from_text(space.to_text(a)), a)
    assert space.formulas(a)[-2].startswith("h_t = a_14")


@pytest.mark.parametrize("text, match", [
    ("add:tanh,add:tanh|inject=add:relu|cell=1,0", "2 tree nodes.*has 3"),
    ("add:tanh,add:tanh,max:tanh|inject=add:relu|cell=1,0",
     "unknown choice 'max'.*add, elem_mult"),
    ("add:tanh,add:tanh,add:tanh|inject=add:relu|cell=3,0",
     "unknown choice '3'"),
    ("add:tanh,add:tanh,add:tanh|cell=1,0", "cannot parse"),
    ("add:tanh,add:tanh,add|inject=add:relu|cell=1,0", "not 'comb:act'"),
])
def test_invalid_tree_codes_are_clear_errors(text, match):
  with pytest.raises(InvalidArchitectureError, match=match):
    registry.get("nasrl_rnn", base=2).from_text(text)


def test_invalid_base_is_a_clear_error():
  with pytest.raises(ValueError, match="base must be one of"):
    registry.get("nasrl_rnn", base=3)
  with pytest.raises(InvalidArchitectureError, match="cell_index/c_out"):
    registry.get("nasrl_rnn", base=2).validate([0] * 8 + [3, 0])


def _sig(x):
  return 1 / (1 + np.exp(-x))


def test_tree_cell_computes_the_worked_example_formulas():
  H, B = 3, 2
  space = registry.get("nasrl_rnn", base=2)
  arch = space.from_text(nasrl_rnn.WORKED_EXAMPLE)
  cell = rnn_tree_cell.TreeCell(hidden_size=H, base=2)
  xs = jax.random.normal(jax.random.key(0), (B, 2, H))
  carry = (jax.random.normal(jax.random.key(1), (B, H)),
           jax.random.normal(jax.random.key(2), (B, H)))
  params = cell.init(jax.random.key(3), xs, carry, arch)["params"]
  ys, (h2, c2) = cell.apply({"params": params}, xs, carry, arch)
  wx, wh = np.asarray(params["w_x"]), np.asarray(params["w_h"])
  W1, W3 = wx[:, :H], wx[:, H:]
  W2, W4 = wh[:, :H], wh[:, H:]
  h, c = np.asarray(carry[0]), np.asarray(carry[1])
  for t in range(2):
    x = np.asarray(xs[:, t])
    a0 = np.tanh(x @ W1 + h @ W2)
    pre1 = (x @ W3) * (h @ W4)
    a1 = np.maximum(pre1, 0)
    a0_new = np.maximum(a0 + c, 0)
    h, c = _sig(a0_new * a1), pre1
    np.testing.assert_allclose(ys[:, t], h, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(h2, h, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(c2, c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("base_", [2, 8])
def test_one_program_serves_every_tree_of_a_base(base_):
  H = 4
  space = registry.get("nasrl_rnn", base=base_)
  cell = rnn_tree_cell.TreeCell(hidden_size=H, base=base_)
  xs = jax.random.normal(jax.random.key(0), (2, 3, H)) * 0.5
  carry = cell.zero_carry(2)
  a0 = space.sample_uniform(jax.random.key(1))
  params = cell.init(jax.random.key(2), xs, carry, a0)["params"]
  assert params["w_x"].shape == (H, base_ * H)
  apply = jax.jit(lambda a: cell.apply({"params": params}, xs, carry, a)[0])
  outs = {np.asarray(apply(space.sample_uniform(jax.random.key(k)))
                     ).round(5).tobytes() for k in range(5)}
  assert apply._cache_size() == 1 and len(outs) > 1


def test_viz_draws_the_tree(tmp_path):
  space = registry.get("nasrl_rnn", base=2)
  arch = space.from_text(nasrl_rnn.WORKED_EXAMPLE)
  g, = viz.graphs(space, arch)
  assert g.nodes[:2] == ["x[t], h[t-1]", "c[t-1]"]
  assert "inject: add, relu" in g.nodes and g.nodes[-1] == "c[t]"
  # c_t leaves node 1 (pre-activation); c_{t-1} enters the inject.
  n1 = g.nodes.index("1: elem_mult, relu")
  assert (n1, len(g.nodes) - 1, "pre-activation") in g.edges
  assert (1, g.nodes.index("inject: add, relu"), "") in g.edges
  written = viz.draw(space, arch, tmp_path / "tree.png")
  assert (tmp_path / "tree.png").stat().st_size > 0 and len(written) >= 2
