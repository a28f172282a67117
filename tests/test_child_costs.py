"""Costs of the child networks trained from scratch (seed-003 cells, the
Block-QNN block): parameters and MACs against hand counts of small networks,
parameter counts against the initialised networks, Block-QNN's density."""

from __future__ import annotations

import json
import pathlib
import runpy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import costs
from nas_jax.children import cell_net
from nas_jax.data import nasbench201 as nb201_data
from nas_jax.spaces import blockqnn, nasbench201, registry, seed003
from nas_jax.train import tabular_run

T = blockqnn.TYPES.index


def test_op_costs_hand_counted():
  # C = 2 outputs on 4 pixels.
  assert costs.op_costs("identity", 2, 4) == (0, 0)
  assert costs.op_costs("max_pool_3x3", 2, 4) == (0, 0)
  assert costs.op_costs("conv_3x3", 2, 4) == (36 + 4, 36 * 4)
  assert costs.op_costs("dil_conv_3x3", 2, 4) == (36 + 4, 36 * 4)
  assert costs.op_costs("conv_1x1", 2, 4, in_channels=6) == (12 + 4, 12 * 4)
  # 1x3 (2*2*3 = 12) then 3x1 (12), one BN.
  assert costs.op_costs("conv_1x3_3x1", 2, 4) == (24 + 4, 24 * 4)
  # Twice: depthwise 3x3 (18) + pointwise (4) + BN (4).
  assert costs.op_costs("sep_conv_3x3", 2, 4) == (44 + 8, 44 * 4)
  with pytest.raises(ValueError, match="no cost known"):
    costs.op_costs("conv_xx", 2, 4)


def _net_and_params(space_name, arch, **kw):
  net = cell_net.make_network(space_name, num_classes=3, channels=2,
                              num_cells=2, reduce_every=1, **kw)
  shapes = jax.eval_shape(lambda k, x, a: net.init(k, x, a, False),
                          jax.random.key(0), jnp.zeros((1, 4, 4, 1)),
                          jnp.asarray(arch))
  # Only the shapes matter for counting (and tracing is cheaper than init).
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                        shapes["params"])
  return net, params


def test_blockqnn_network_hand_counted():
  space = registry.get("blockqnn", max_layers=3)
  # concat(x, x); avg_pool_3(x); conv5(l1): outputs l2, l3. C = 2, 4x4x1
  # images, blocks on 4x4 then 2x2, 3 classes:
  #   stem 3x3 1->2 + BN: 18 + 4 params, 18 * 16 MACs
  #   block: concat 1x1 4->2 + BN 8 + 4, conv5 100 + 4, output 1x1 4->2
  #   + BN 8 + 4 = 128 params; (8 + 100 + 8) * hw MACs
  #   classifier 2->3: 6 + 3 params, 6 MACs
  arch = [T("concat"), 0, 0, T("avg_pool_3"), 0, 0, T("conv_5"), 1, 0]
  net, params = _net_and_params("blockqnn", arch)
  assert costs.child_costs(net, space, arch, (4, 4, 1)) == (
      22 + 2 * 128 + 9, 288 + 116 * 16 + 116 * 4 + 6)
  # The one-program network holds the output projection over all M + 1
  # slots; the child reads its 2 outputs' rows only.
  assert cell_net.child_param_count(space, params, arch) == (
      22 + 2 * 128 + 9 + 2 * (4 - 2) * 2 * 2)


def test_seed003_networks_hand_counted_and_match_their_params():
  small = registry.get("seed003_small")
  arch = [seed003.OPS.index("conv_3x3"), seed003.OPS.index("sep_conv_3x3")]
  net, params = _net_and_params("seed003_small", arch)
  # stem 22; per cell conv3 (36 + 4) + sep3 (44 + 8); classifier 9.
  assert costs.child_costs(net, small, arch, (4, 4, 1)) == (
      22 + 2 * 92 + 9, 288 + 80 * 16 + 80 * 4 + 6)
  for a in [[0, 7], [3, 4], [5, 5]]:
    assert costs.child_costs(net, small, a, (4, 4, 1))[0] == (
        cell_net.child_param_count(small, params, a))
  large = registry.get("seed003_large", num_nodes=3)
  archs = [np.asarray(large.sample_uniform(jax.random.key(i)))
           for i in range(4)]
  net, params = _net_and_params("seed003_large", archs[0], num_nodes=3)
  for a in archs:
    assert costs.child_costs(net, large, a, (4, 4, 1))[0] == (
        cell_net.child_param_count(large, params, a))


def test_blockqnn_density():
  space = registry.get("blockqnn", max_layers=3)
  # conv3(x); add(x, l1); concat(l1, l2): 5 edges over 4 nodes.
  assert costs.blockqnn_density(
      space, [T("conv_3"), 0, 0, T("add"), 0, 1, T("concat"), 1, 2]) == 1.25
  # conv3(x); terminal: 1 edge over 2 nodes; empty block: 1 over 1.
  assert costs.blockqnn_density(
      space, [T("conv_3"), 0, 0, T("terminal"), 0, 1, T("add"), 1, 2]) == 0.5
  assert costs.blockqnn_density(space, [T("terminal"), 0, 0] * 3) == 1.0


def test_unknown_network_is_a_clear_error():
  space = registry.get("seed003_small")
  with pytest.raises(ValueError, match="no cost model for Dense"):
    costs.child_costs(__import__("flax").linen.Dense(2), space, [0, 0],
                      (4, 4, 1))


@pytest.mark.skipif(not nb201_data.default_path().is_file(),
                    reason="NAS-Bench-201 table not found")
def test_tabular_run_history_has_the_cell_costs(tmp_path):
  config = runpy.run_path(str(pathlib.Path(__file__).resolve().parents[1] /
                              "experiments/configs/nasbench201.py")
                          )["get_config"]("random")
  config.update_from_flattened_dict({"max_evals": 12, "time_budget": 0.0})
  tabular_run.run(config, str(tmp_path))
  space = nasbench201.space()
  lines = [json.loads(l) for l in
           (tmp_path / "history.jsonl").read_text().splitlines()]
  assert len(lines) == 12
  archs = jnp.asarray(np.stack([space.from_text(h["arch"]) for h in lines]))
  np.testing.assert_array_equal([h["params"] for h in lines],
                                costs.nasbench201_params(archs))
  np.testing.assert_allclose([h["flops"] for h in lines],
                             costs.nasbench201_flops(archs), rtol=1e-6)
