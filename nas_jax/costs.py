"""Costs of architectures and the cost-aware rewards that mix them in.

* NAS-Bench-201 cells: parameter count and FLOPs of the network the
  benchmark trains (Dong & Yang, ICLR 2020, Sec. 2.1 and Fig. 1): a 3x3 stem
  conv to C = 16 channels, three stages of N = 5 cells at C, 2C, 4C on 32x32,
  16x16 and 8x8 maps, a residual block (ReLU-conv3x3/2-BN, ReLU-conv3x3-BN,
  shortcut avg-pool + 1x1 conv) between stages, BN-ReLU, global pooling and a
  linear classifier. A cell's ``nor_conv_kxk`` edge is ReLU-conv(C, C, k)-BN
  (``k*k*C*C + 2C`` parameters); pooling, skip and none have none. FLOPs are
  multiply-accumulates of the convolutions and the classifier (BN, ReLU,
  pooling and sums not counted), as NAS-Bench-201 reports them: 7.78 M for
  a cell without convolutions, 220.12 M for all six edges 3x3.
* Child networks trained from scratch (``nas_jax.children``: the seed-003
  cells and the Block-QNN block): exact parameters and MACs of the network
  the config builds, from its attributes and the code (:func:`child_costs`).
* Connection density of a cell (Block-QNN, Zhong et al. CVPR 2018, Sec. 3.4:
  edges over nodes of the block's graph).
* Rewards: Block-QNN's ``accuracy - mu log(FLOPs) - rho log(density)``
  (seed 000: ``mu = rho = 1/2``) and TuNAS's absolute-value reward
  ``accuracy + beta |cost / target - 1|`` (Bender et al., CVPR 2020, Sec.
  3.3; beta < 0).

The NAS-Bench-201 functions and the rewards are jittable and broadcast over
leading axes of ``archs``; the child-network counts are host-side Python.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.spaces import nasbench201

# The conv kernel size of each op (0: the op has no parameters nor FLOPs).
_NB201_KERNEL = {"none": 0, "skip_connect": 0, "nor_conv_1x1": 1,
                 "nor_conv_3x3": 3, "avg_pool_3x3": 0}


def _check_nb201(channels: int, cells_per_stage: int, num_classes: int,
                 image_size: int):
  for name, v in (("channels", channels), ("cells_per_stage",
                                           cells_per_stage),
                  ("num_classes", num_classes), ("image_size", image_size)):
    if not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"costs.nasbench201: {name} must be an integer >= 1, "
                       f"got {v!r}")
  if image_size % 4:
    raise ValueError(f"costs.nasbench201: image_size must be a multiple of "
                     f"4 (two stride-2 reductions), got {image_size}")


def _nb201_tables(channels, cells_per_stage, num_classes, image_size):
  """(fixed params, fixed FLOPs, per-op params f[5], per-op FLOPs f[5])."""
  C, hw = channels, image_size * image_size
  params = 9 * 3 * C + 2 * C   # stem conv + BN
  flops = 9 * 3 * C * hw
  for c_in, hw_out in ((C, hw // 4), (2 * C, hw // 16)):  # residual blocks
    c_out = 2 * c_in
    params += (9 * c_in * c_out + 2 * c_out) + (9 * c_out * c_out + 2 * c_out)
    params += c_in * c_out  # shortcut 1x1 conv (no BN)
    flops += (9 * c_in * c_out + 9 * c_out * c_out + c_in * c_out) * hw_out
  params += 2 * 4 * C + 4 * C * num_classes + num_classes  # BN, classifier
  flops += 4 * C * num_classes
  op_params = np.zeros(len(nasbench201.OPS))
  op_flops = np.zeros(len(nasbench201.OPS))
  for i, op in enumerate(nasbench201.OPS):
    k = _NB201_KERNEL[op]
    if not k:
      continue
    for c, s_hw in ((C, hw), (2 * C, hw // 4), (4 * C, hw // 16)):
      op_params[i] += cells_per_stage * (k * k * c * c + 2 * c)
      op_flops[i] += cells_per_stage * k * k * c * c * s_hw
  return params, flops, op_params, op_flops


def nasbench201_params(archs, *, channels: int = 16, cells_per_stage: int = 5,
                       num_classes: int = 10,
                       image_size: int = 32) -> jax.Array:
  """Parameters of the NAS-Bench-201 network of cells ``archs [..., 6]``."""
  _check_nb201(channels, cells_per_stage, num_classes, image_size)
  fixed, _, per_op, _ = _nb201_tables(channels, cells_per_stage, num_classes,
                                      image_size)
  return fixed + jnp.sum(jnp.asarray(per_op, jnp.float32)[archs], axis=-1)


def nasbench201_flops(archs, *, channels: int = 16, cells_per_stage: int = 5,
                      num_classes: int = 10,
                      image_size: int = 32) -> jax.Array:
  """Multiply-accumulates of one forward pass of one image."""
  _check_nb201(channels, cells_per_stage, num_classes, image_size)
  _, fixed, _, per_op = _nb201_tables(channels, cells_per_stage, num_classes,
                                      image_size)
  return fixed + jnp.sum(jnp.asarray(per_op, jnp.float32)[archs], axis=-1)


def nasbench201_density(archs) -> jax.Array:
  """Edges that carry an op (not ``none``) over the cell's 4 nodes; a cell
  with no edge counts as 1 edge, so ``log(density)`` stays finite."""
  edges = jnp.sum(jnp.asarray(archs) != nasbench201.OPS.index("none"),
                  axis=-1)
  return jnp.maximum(edges, 1) / 4.0


def blockqnn_reward(accuracy, flops, density, *, mu: float = 0.5,
                    rho: float = 0.5) -> jax.Array:
  """Block-QNN's shaped reward ``accuracy - mu log(flops) - rho
  log(density)`` (seed 000: mu = rho = 1/2). ``flops`` in the unit the
  caller chooses (e.g. relative to a reference network): a change of unit
  shifts every reward by the same constant."""
  return (jnp.asarray(accuracy) - mu * jnp.log(flops)
          - rho * jnp.log(density))


def tunas_reward(accuracy, cost, *, target: float,
                 beta: float = -0.07) -> jax.Array:
  """TuNAS's absolute-value reward ``accuracy + beta |cost / target - 1|``.

  Args:
    cost: e.g. ``nasbench201_params(archs)``.
    target: the cost aimed at, > 0.
    beta: <= 0, how much a relative miss of the target costs (TuNAS: -0.07
      for latency).
  """
  # Traced values (vmapped over targets) have nothing to check here.
  if not isinstance(target, jax.core.Tracer) and not target > 0:
    raise ValueError(f"cost target must be > 0 (the cost aimed at, e.g. a "
                     f"parameter count), got {target}")
  if not isinstance(beta, jax.core.Tracer) and beta > 0:
    raise ValueError(f"beta must be <= 0 (a penalty for missing the cost "
                     f"target; TuNAS uses -0.07), got {beta}")
  return jnp.asarray(accuracy) + beta * jnp.abs(
      jnp.asarray(cost, jnp.float32) / target - 1.0)


def nasbench201_cost_aware(evaluator, *, target_params: float,
                           beta: float = -0.07):
  """A NAS-Bench-201 table evaluator whose reward is TuNAS's
  ``reward + beta |params / target_params - 1|`` (the cost the search is
  charged is unchanged); the parameter count of every cell is reported as
  the extra column ``"params"``. A search over it is TuNAS-style cost-aware
  search with a parameter-count target."""
  from nas_jax.evaluators import tabular  # noqa: PLC0415 (keeps costs light)
  space = evaluator.space
  if space.num_decisions != len(nasbench201.EDGES):
    raise ValueError(f"nasbench201_cost_aware needs a NAS-Bench-201 "
                     f"evaluator, got space {space.name!r}")
  n = space.num_architectures
  archs = np.stack([space.from_index(i) for i in range(n)])  # index order
  params = np.asarray(nasbench201_params(jnp.asarray(archs)))
  reward = tunas_reward(evaluator.reward, params, target=target_params,
                        beta=beta)
  extra = {k: np.asarray(v) for k, v in evaluator.extra.items()}
  extra["params"] = params
  return tabular.TabularEvaluator(space, np.asarray(reward),
                                  np.asarray(evaluator.cost), extra)


# -- child networks trained from scratch (nas_jax.children) -------------------
#
# Host-side and exact (Python ints): the network the config builds, counted
# from its attributes and the code, in the convention above (weights and BN
# scale/shift as parameters; convolution and classifier multiply-accumulates
# as FLOPs).


def op_costs(name: str, channels: int, hw: int,
             in_channels: int | None = None) -> tuple[int, int]:
  """``(params, MACs)`` of op ``name`` of ``nas_jax.children.ops.OPS`` at
  ``channels`` outputs on ``hw`` pixels (``in_channels``: its input's, if
  different; only convolutions take that)."""
  c, c_in = channels, in_channels or channels
  if name == "identity" or "_pool_" in name:
    return 0, 0
  m = re.fullmatch(r"(sep_|dil_)?conv_(\d)x(\d)(?:_(\d)x1)?", name)
  if m and m.group(1) == "sep_":  # twice ReLU-depthwise-pointwise-BN
    k = int(m.group(2))
    w = k * k * c_in + c_in * c + k * k * c + c * c
    return w + 4 * c, w * hw
  if m and m.group(4):  # ReLU, 1xk and kx1 convs, BN (conv_1xk_kx1)
    k = int(m.group(3))
    w = k * c_in * c + k * c * c
    return w + 2 * c, w * hw
  if m:  # ReLU-conv-BN, dilated or not
    k = int(m.group(2))
    w = k * k * c_in * c
    return w + 2 * c, w * hw
  raise ValueError(f"op_costs: no cost known for op {name!r}")


def _stage_hw(image_shape, num_cells: int, reduce_every: int) -> list[int]:
  """Pixels seen by each cell (a 2x2/2 ``SAME`` pool between groups)."""
  h, w = image_shape[0], image_shape[1]
  out = []
  for c in range(num_cells):
    if reduce_every and c and c % reduce_every == 0:
      h, w = -(-h // 2), -(-w // 2)
    out.append(h * w)
  return out


def blockqnn_density(space, arch) -> float:
  """Block-QNN's connection density (CVPR 2018, Sec. 3.4): the block's
  edges over its nodes (the input and the layers before the terminal); an
  empty block counts one edge, so ``log(density)`` stays finite."""
  from nas_jax.spaces import blockqnn  # noqa: PLC0415 (keeps costs light)
  layers = blockqnn.to_layers(space, arch)
  edges = sum(1 + (b >= 0) for _, _, b in layers)
  return max(edges, 1) / (len(layers) + 1)


def _blockqnn_block(space, arch, c: int, hw: int) -> tuple[int, int]:
  from nas_jax.children import blockqnn_net  # noqa: PLC0415
  from nas_jax.spaces import blockqnn  # noqa: PLC0415
  layers = blockqnn.to_layers(space, arch)
  params = flops = 0
  read = set()
  for kind, a, b in layers:
    read |= {a, b}
    if kind != "add":
      p, f = op_costs(blockqnn_net.TYPE_OPS[kind], c, hw,
                      2 * c if kind == "concat" else c)
      params, flops = params + p, flops + f
  outputs = sum(j not in read for j in range(1, len(layers) + 1)) or 1
  p, f = op_costs("conv_1x1", c, hw, outputs * c)  # the output projection
  return params + p, flops + f


def child_costs(network, space, arch, image_shape) -> tuple[int, int]:
  """``(params, MACs)`` of child ``arch`` of ``network`` (a module of
  ``cell_net.make_network``) on images of ``image_shape`` ``(H, W, C_in)``:
  the child's own ops, not every candidate the one-program network holds
  (for Block-QNN, the output projection reads the block's outputs only).

  Raises:
    ValueError: no cost model for the network's class.
  """
  from nas_jax.children import blockqnn_net, cell_net  # noqa: PLC0415
  known = (blockqnn_net.BlockQNNNet, cell_net.ChainCellNet,
           cell_net.BranchingCellNet)
  if not isinstance(network, known):
    raise ValueError(f"costs.child_costs: no cost model for "
                     f"{type(network).__name__}; add one in "
                     f"nas_jax/costs.py")
  arch = space.validate(arch)
  c = network.channels
  hws = _stage_hw(image_shape, network.num_cells, network.reduce_every)
  params = 9 * image_shape[2] * c + 2 * c  # stem conv + BN
  flops = 9 * image_shape[2] * c * image_shape[0] * image_shape[1]
  for hw in hws:
    if isinstance(network, blockqnn_net.BlockQNNNet):
      p, f = _blockqnn_block(space, arch, c, hw)
    else:  # the ops of a chain cell, or of a branching cell's nodes
      ops = arch if isinstance(network, cell_net.ChainCellNet) else arch[1::2]
      per = [op_costs(network.space_ops[int(v)], c, hw) for v in ops]
      p, f = sum(q for q, _ in per), sum(g for _, g in per)
    params, flops = params + p, flops + f
  return (params + c * network.num_classes + network.num_classes,
          flops + c * network.num_classes)


def history_costs(network, space, arch, image_shape) -> dict[str, int]:
  """``{"params", "flops"}`` of a trained child for a history line; empty
  when ``costs`` has no model of the network (so a history never fails for
  want of one)."""
  try:
    params, flops = child_costs(network, space, arch, image_shape)
  except ValueError:
    return {}
  return {"params": params, "flops": flops}


def table_costs(space, archs) -> dict[str, np.ndarray]:
  """``{"params", "flops"}`` arrays for ``archs [..., T]`` of a tabular
  space with a cost model (NAS-Bench-201's network); else empty."""
  if space.name != "nasbench201":
    return {}
  a = jnp.asarray(archs)
  return {"params": np.asarray(nasbench201_params(a)),
          "flops": np.asarray(nasbench201_flops(a))}


def blockqnn_shaping(network, space, image_shape, *, mu: float = 0.5,
                     rho: float = 0.5, flops_unit: float = 1e6):
  """Block-QNN's early-stop reward of a trained child, as ``(arch, accuracy)
  -> accuracy - mu log(MACs / flops_unit) - rho log(density)`` (CVPR 2018,
  Sec. 3.4; seed 000: ``mu = rho = 1/2``). Children trained briefly
  (``ChildTrainer(early_stop_steps=...)``) favour small, sparse blocks less
  once this is charged. The density is the block's (``blockqnn`` space), 1
  for other spaces."""
  for name, v in (("mu", mu), ("rho", rho)):
    if not v >= 0:
      raise ValueError(f"blockqnn reward {name} must be >= 0 (a penalty "
                       f"weight; seed 000 uses 0.5), got {v}")
  if not flops_unit > 0:
    raise ValueError(f"blockqnn reward flops_unit must be > 0 (MACs per "
                     f"unit, e.g. 1e6), got {flops_unit}")

  def reward(arch, accuracy: float) -> float:
    _, flops = child_costs(network, space, arch, image_shape)
    density = (blockqnn_density(space, arch) if space.name == "blockqnn"
               else 1.0)
    return float(blockqnn_reward(accuracy, flops / flops_unit, density,
                                 mu=mu, rho=rho))
  return reward


class ShapedEvaluator:
  """An evaluator (e.g. ``TrainFromScratchEvaluator``) whose rewards are
  ``reward_fn(arch, reward)`` of the wrapped one's; everything else (the
  cache, checkpoint state) is the wrapped evaluator's."""

  def __init__(self, evaluator, reward_fn):
    self.evaluator, self.reward_fn = evaluator, reward_fn

  def __getattr__(self, name):
    if name == "evaluator":  # not set yet (e.g. while copying)
      raise AttributeError(name)
    return getattr(self.evaluator, name)

  def __call__(self, archs):
    ev = self.evaluator(archs)
    shaped = [self.reward_fn(a, float(r))
              for a, r in zip(np.asarray(archs), np.asarray(ev.reward))]
    return ev._replace(reward=np.asarray(shaped, np.float32))
