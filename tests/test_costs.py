"""Cost model: NAS-Bench-201 parameter counts and FLOPs against hand counts,
connection density, and the Block-QNN and TuNAS cost-aware rewards."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import costs
from nas_jax.spaces import nasbench201

NONE, SKIP, CONV1, CONV3, POOL = range(5)


def test_benchmark_network_hand_counted():
  # Without convolutions in the cells (C = 16, N = 5, 10 classes, 32x32):
  #   stem 3x3 3->16 + BN: 432 + 32 = 464 params, 432 * 1024 MACs
  #   res 16->32: (4608 + 64) + (9216 + 64) + 512 = 14,464 params,
  #               (4608 + 9216 + 512) * 256 MACs
  #   res 32->64: (18432 + 128) + (36864 + 128) + 2048 = 57,600 params,
  #               (18432 + 36864 + 2048) * 64 MACs
  #   BN 64 + linear 64->10: 128 + 650 params, 640 MACs
  # = 73,306 params and 7,783,040 MACs (NAS-Bench-201's smallest: 0.0733 M
  # params, 7.78 MFLOPs).
  none = jnp.zeros((6,), jnp.int32)
  pool = jnp.full((6,), POOL)
  assert float(costs.nasbench201_params(none)) == 73_306
  assert float(costs.nasbench201_flops(none)) == 7_783_040
  assert float(costs.nasbench201_params(pool)) == 73_306
  # All six edges conv3x3: per stage 5 cells * 6 edges * (9 C^2 + 2 C)
  # params and 5 * 6 * 9 C^2 * HW MACs (70,778,880 at every stage).
  conv3 = jnp.full((6,), CONV3)
  params = 73_306 + 30 * sum(9 * c * c + 2 * c for c in (16, 32, 64))
  assert params == 1_531_546
  assert float(costs.nasbench201_params(conv3)) == params
  np.testing.assert_allclose(costs.nasbench201_flops(conv3),
                             7_783_040 + 3 * 70_778_880, rtol=1e-7)


def test_small_network_hand_counted_and_batched():
  # C = 1, one cell per stage, 1 class, 4x4 images, one 1x1 conv edge:
  #   fixed params: stem 27 + 2; res 1->2: 22 + 40 + 2; res 2->4: 80 + 152
  #   + 8; BN 8; linear 4 + 1                         = 346
  #   fixed MACs: 27 * 16 + (18 + 36 + 2) * 4 + (72 + 144 + 8) * 1 + 4 = 884
  #   the conv1x1 edge: params (1 + 2) + (4 + 4) + (16 + 8) = 35,
  #   MACs 1 * 16 + 4 * 4 + 16 * 1 = 48
  kw = dict(channels=1, cells_per_stage=1, num_classes=1, image_size=4)
  archs = jnp.asarray([[CONV1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0],
                       [CONV1, SKIP, 0, 0, CONV1, POOL]])
  np.testing.assert_array_equal(costs.nasbench201_params(archs, **kw),
                                [381, 346, 416])
  np.testing.assert_array_equal(costs.nasbench201_flops(archs, **kw),
                                [932, 884, 980])
  # Jittable and vmappable like everything in a search.
  np.testing.assert_array_equal(
      jax.jit(jax.vmap(lambda a: costs.nasbench201_flops(a, **kw)))(archs),
      [932, 884, 980])


def test_density():
  space = nasbench201.space()
  archs = jnp.asarray([space.from_text(
      "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|"
      "avg_pool_3x3~2|"), np.zeros(6, np.int32)])
  np.testing.assert_allclose(costs.nasbench201_density(archs), [0.75, 0.25])


def test_rewards():
  r = costs.blockqnn_reward(0.9, math.exp(2.0), math.exp(-1.0))
  np.testing.assert_allclose(r, 0.9 - 1.0 + 0.5, rtol=1e-6)
  # TuNAS: 50% over the target costs |beta| * 0.5; on target costs nothing.
  np.testing.assert_allclose(
      costs.tunas_reward(jnp.asarray([0.9, 0.9, 0.8]),
                         jnp.asarray([150.0, 100.0, 50.0]), target=100.0,
                         beta=-0.1), [0.85, 0.9, 0.75], rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(target=-1.0), r"cost target must be > 0 .* got -1.0"),
    (dict(target=0.0), "cost target must be > 0"),
    (dict(target=1.0, beta=0.5), r"beta must be <= 0 .*TuNAS uses -0.07"),
])
def test_bad_reward_options(kwargs, match):
  with pytest.raises(ValueError, match=match):
    costs.tunas_reward(0.9, 1.0, **kwargs)


def test_bad_network_size():
  with pytest.raises(ValueError, match="channels must be an integer >= 1"):
    costs.nasbench201_params(jnp.zeros(6, jnp.int32), channels=0)
  with pytest.raises(ValueError, match="image_size must be a multiple of 4"):
    costs.nasbench201_flops(jnp.zeros(6, jnp.int32), image_size=30)


def test_cost_aware_table_evaluator():
  from nas_jax.evaluators import tabular  # noqa: PLC0415
  space = nasbench201.space()
  n = space.num_architectures
  acc = np.linspace(0.5, 0.9, n).astype(np.float32)
  base_ev = tabular.TabularEvaluator(space, acc, np.full(n, 2.0),
                                     {"test": acc})
  target = 73_306 * 2.0  # twice the smallest network
  ev = costs.nasbench201_cost_aware(base_ev, target_params=target, beta=-0.1)
  archs = jnp.asarray([np.zeros(6, np.int32), np.full(6, CONV3)])
  out = ev(archs)
  idx = np.asarray(space.index(archs))
  # The smallest cell is 50% under the target, all-conv3x3 ~9.4x over it.
  np.testing.assert_allclose(out.reward, [
      acc[idx[0]] - 0.05, acc[idx[1]] - 0.1 * (1_531_546 / target - 1)],
                             rtol=1e-5)
  np.testing.assert_array_equal(out.cost, [2.0, 2.0])
  np.testing.assert_array_equal(ev.lookup("params", archs), [73_306,
                                                            1_531_546])
  np.testing.assert_allclose(ev.lookup("test", archs), acc[idx])
  with pytest.raises(ValueError, match="cost target must be > 0"):
    costs.nasbench201_cost_aware(base_ev, target_params=-5.0)
