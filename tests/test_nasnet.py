"""The NASNet network (Zoph et al. 2018, Sec. 3/4.1): NASNet-A's size, the
supernet with arch input against the fixed network of the same child, drop
path and the sizing errors.

The supernet test uses B = 2 blocks, one cell per stage and one reduction
on 8x8 images: its compile time dominates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.children import cell_net
from nas_jax.children import enas_cnn
from nas_jax.children import nasnet
from nas_jax.spaces import nasnet as nasnet_space

B = 2
SMALL = dict(num_blocks=B, num_cells=1, channels=4, num_reductions=1,
             num_classes=3)


def _fixed_params(net, shape=(1, 32, 32, 3)):
  return jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros(shape),
                                         None, False))["params"]


def test_nasnet_a_6_at_768_has_the_published_size():
  """Table 1: NASNet-A (6 @ 768) on CIFAR-10 has 3.3M parameters."""
  space, arch, concat = nasnet_space.named("nasnet_a")
  assert space.name == "nasnet" and len(arch) == 50
  net = nasnet.NASNet(num_cells=6, penultimate_filters=768, aux_head=True,
                      fixed_arch=tuple(int(v) for v in arch),
                      fixed_concat=concat)
  assert net.base_channels() == 32  # 768 = 6 states x 32 x 2^2
  params = _fixed_params(net)
  count = enas_cnn.param_count(
      {k: v for k, v in params.items() if k != "aux_head"})
  assert abs(count / 3.3e6 - 1) < 0.05, count
  # The penultimate layer is 768 wide: 6 concatenated states of 128.
  assert params["classifier"]["kernel"].shape == (768, 10)
  # 18 cells + 2 reductions; the reduction concatenates 4 states.
  cells = [k for k in params if k.startswith("cell")]
  assert len(cells) == 20 and sum("reduce" in k for k in cells) == 2
  assert params["cell7"]["calibrate"]["conv"]["Conv_0"]["kernel"].shape == (
      1, 1, 4 * 64, 64)


def test_sizing_errors_name_the_fix():
  _, arch, concat = nasnet_space.named("nasnet_a")
  fixed = tuple(int(v) for v in arch)
  with pytest.raises(ValueError, match=r"multiple of 24.*e\.g\. 768"):
    nasnet.check_sizes(nasnet.NASNet(penultimate_filters=770,
                                     fixed_arch=fixed, fixed_concat=concat))
  with pytest.raises(ValueError, match="needs a fixed architecture.*"
                     "network.channels"):
    nasnet.check_sizes(nasnet.NASNet(penultimate_filters=768))
  with pytest.raises(ValueError, match="network.stem must be"):
    nasnet.check_sizes(nasnet.NASNet(stem="mnist"))
  with pytest.raises(ValueError, match="fixed_arch has 3 codes, expected 50"):
    nasnet.check_sizes(nasnet.NASNet(fixed_arch=(0, 0, 0)))
  # The paper's rule without the released concat list: 5 unread blocks.
  net = nasnet.NASNet(penultimate_filters=640, fixed_arch=fixed)
  assert net.base_channels() == 32


def test_imagenet_stack_builds():
  _, arch, concat = nasnet_space.named("nasnet_a")
  net = nasnet.NASNet(num_cells=1, penultimate_filters=192, stem="imagenet",
                      fixed_arch=tuple(int(v) for v in arch),
                      fixed_concat=concat, num_classes=5)
  params = _fixed_params(net, (1, 64, 64, 3))
  assert {"stem_cell0", "stem_cell1", "stem_conv"} <= set(params)
  # F / 4 and F / 2 filters in the two stem reduction cells (F = 8).
  for cell, f in (("stem_cell0", 2), ("stem_cell1", 4)):
    k = params[cell]["calibrate"]["reduce0"]["Conv_0"]["kernel"]
    assert k.shape[-1] == f // 2  # two factorized paths of F / 2 each
  assert params["classifier"]["kernel"].shape == (192, 5)
  with pytest.raises(ValueError, match="imagenet.*at least 8"):
    nasnet.check_sizes(net.clone(penultimate_filters=96))


def _archs(space):
  rng = np.random.default_rng(0)
  archs = [space.validate([rng.integers(d.num_choices)
                           for d in space.decisions]) for _ in range(2)]
  # One child reads block 0 in both cells and concatenates in block 1.
  a = np.array(archs[1])
  a[5:10] = (2, 1, 9, 11, 1)
  a[15:20] = (0, 2, 3, 5, 0)
  archs[1] = space.validate(a)
  return archs


def test_supernet_equals_the_fixed_child():
  """For several children: the supernet with the arch as input computes the
  fixed network's training-mode logits and BN updates (on the fixed
  network's cut-down variables) under one compiled program, and the
  child's parameter count is the fixed network's. (Gradients through the
  padding are checked for the NAS-RL CNN; a supernet gradient compile costs
  minutes on this CPU.)"""
  space = nasnet_space.space(B)
  net = cell_net.make_network("nasnet", **SMALL)
  images = jax.random.normal(jax.random.key(2), (4, 8, 8, 2))
  traces = []

  def forward(net, variables, arch):
    return net.apply(variables, images, arch, True, mutable=["batch_stats"])

  @jax.jit
  def step(variables, arch):
    traces.append(1)
    return forward(net, variables, arch)

  archs = _archs(space)
  variables = net.init(jax.random.key(0), images[:1], jnp.asarray(archs[0]),
                       False)
  for arch in archs:
    logits, upd = step(variables, jnp.asarray(arch))
    fixed = nasnet.NASNet(**SMALL, fixed_arch=tuple(int(v) for v in arch))
    cut = nasnet.child_variables(variables, arch, B)
    flogits, fupd = jax.jit(lambda v: forward(fixed, v, None))(cut)
    np.testing.assert_allclose(logits, flogits, rtol=1e-4, atol=1e-5)
    new = nasnet.child_variables({"batch_stats": upd["batch_stats"]}, arch, B)
    assert (jax.tree.structure(new["batch_stats"])
            == jax.tree.structure(fupd["batch_stats"]))
    for a, b in zip(jax.tree.leaves(new["batch_stats"]),
                    jax.tree.leaves(fupd["batch_stats"])):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert cell_net.child_param_count(space, variables["params"], arch) == (
        enas_cnn.param_count(_fixed_params(fixed, (1, 8, 8, 2))))
  assert len(traces) == 1


def test_scheduled_drop_path():
  """Drop path acts with a positive rate and is seeded by the
  ``drop_path`` rng; the auxiliary logits are sown in training."""
  conv1x1 = nasnet_space.OPS.index("conv_1x1")
  net = nasnet.NASNet(num_blocks=1, num_cells=1, channels=2,
                      num_reductions=1, aux_head=True, num_classes=3,
                      fixed_arch=(0, 1, conv1x1, 0, 0, 0, 1, conv1x1, 0, 1))
  x = jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
  v = net.init(jax.random.key(1), x, None, False)

  @jax.jit
  def run(rate, seed):
    return net.apply(v, x, None, True, rate,
                     mutable=["batch_stats", "intermediates"],
                     rngs={"drop_path": jax.random.key(seed)})

  base, upd = run(0.0, 0)
  assert "aux_logits" in upd["intermediates"]
  same, _ = run(0.0, 1)  # a zero rate drops nothing
  np.testing.assert_array_equal(base, same)
  a, _ = run(0.5, 0)
  b, _ = run(0.5, 0)
  c, _ = run(0.5, 1)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, base) and not np.allclose(a, c)


# -- the retrain run kind ------------------------------------------------------


def _retrain_config(variant="tiny", **over):
  from experiments.configs import nasnet_retrain  # pylint: disable=g-import-not-at-top
  c = nasnet_retrain.get_config(variant)
  for k, v in over.items():
    node = c
    *parts, last = k.split("__")
    for p in parts:
      node = node[p]
    node[last] = v
  return c


def test_retrain_config_errors_name_the_fix(tmp_path):
  from nas_jax.spaces.base import InvalidArchitectureError  # pylint: disable=g-import-not-at-top
  from nas_jax.train import retrain  # pylint: disable=g-import-not-at-top
  for v in ("paper", "cpu", "tiny"):
    retrain.check_config(_retrain_config(v))
  # Any architecture text of the space (here B = 1: 10 values).
  retrain.check_config(_retrain_config(arch="0,1,9,4,1,1,0,12,0,0",
                                       space_kwargs={"num_blocks": 1},
                                       network__penultimate_filters=0))
  with pytest.raises(InvalidArchitectureError, match="nasnet_a"):
    retrain.check_config(_retrain_config(arch="0,1,2"))
  with pytest.raises(InvalidArchitectureError,
                     match="belongs to space 'enas_micro'"):
    retrain.check_config(_retrain_config(arch="enas_micro_paper"))
  with pytest.raises(ValueError, match="penultimate_filters must be a "
                     "multiple of 12"):
    retrain.check_config(_retrain_config(network__penultimate_filters=25))
  with pytest.raises(ValueError, match=r"network: .*unexpected keyword"):
    retrain.check_config(_retrain_config(network__num_nodes=3))
  with pytest.raises(ValueError, match="num_reductions"):
    retrain.check_config(_retrain_config(network__num_reductions=4,
                                         network__penultimate_filters=96))
  assert list(tmp_path.iterdir()) == []


def test_retrain_nasnet_a_end_to_end(tmp_path):
  """``run: retrain`` on the tiny variant: NASNet-A by name, N @ F sizing,
  drop path and the auxiliary head, every output file."""
  import json  # pylint: disable=g-import-not-at-top
  from nas_jax.train import retrain  # pylint: disable=g-import-not-at-top
  summary = retrain.run(_retrain_config(), str(tmp_path))
  assert summary["status"] == "done" and summary["space"] == "nasnet"
  best = json.loads((tmp_path / "best.json").read_text())
  _, arch, concat = nasnet_space.named("nasnet_a")
  assert best["text"] == nasnet_space.space(5).to_text(arch)
  # 1 @ 24 with one reduction: F = 24 / 6 / 2 = 2 filters per block.
  net = nasnet.NASNet(num_cells=1, penultimate_filters=24, num_reductions=1,
                      stem_multiplier=1, fixed_arch=tuple(int(v) for v in arch),
                      fixed_concat=concat)
  assert best["num_params"] == enas_cnn.param_count(
      _fixed_params(net, (1, 8, 8, 1)))
  assert 0.0 <= best["test_accuracy"] <= 1.0
  for name in ("config.json", "history.jsonl", "metrics.jsonl",
               "best_arch.png", "search_curve.png", "summary.json",
               "checkpoints"):
    assert (tmp_path / name).exists(), name
  hist = [json.loads(l) for l in (tmp_path / "history.jsonl").open()]
  assert len(hist) == 1 and np.isfinite(hist[0]["train_loss"])
