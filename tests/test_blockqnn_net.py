"""The Block-QNN child network: the one-program switch network computes what
the block built statically from its layer list computes, for several codes,
with one compilation; the block output mask; the parameter count."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.children import blockqnn_net, cell_net, ops
from nas_jax.spaces import blockqnn, registry

C = 4
M = 3  # max_layers
SPACE = registry.get("blockqnn", max_layers=M)
T = blockqnn.TYPES.index
CODES = [
    # conv3(x); add(x, l1); terminal -> output l2
    [T("conv_3"), 0, 0, T("add"), 0, 1, T("terminal"), 0, 0],
    # concat(x, x); avg_pool_3(x); conv5(l1) -> outputs l2, l3
    [T("concat"), 0, 0, T("avg_pool_3"), 0, 0, T("conv_5"), 1, 0],
    # max_pool_1(x); max_pool_3(l1); avg_pool_1(x) -> l2, l3
    [T("max_pool_1"), 0, 0, T("max_pool_3"), 1, 0, T("avg_pool_1"), 0, 1],
    # conv1(x); concat(l1, x); add(l2, l1) -> l3 (input2 of concat read)
    [T("conv_1"), 0, 0, T("concat"), 1, 0, T("add"), 2, 1],
    # empty block: the projection of the input
    [T("terminal"), 0, 0, T("conv_3"), 0, 0, T("identity"), 1, 0],
]


def test_block_outputs_mask():
  got = [np.asarray(blockqnn_net.block_outputs(jnp.asarray(c))).tolist()
         for c in CODES]
  assert got == [[False, False, True, False], [False, False, True, True],
                 [False, False, True, True], [False, False, False, True],
                 [True, False, False, False]]


def _apply(module, variables, x):
  """``module`` in train mode on sub-variables (no stats: a stateless op)."""
  if not variables.get("params"):
    return module.apply({}, x, True)
  y, _ = module.apply(variables, x, True, mutable=["batch_stats"])
  return y


def _sub(variables, *path):
  out = {}
  for col in ("params", "batch_stats"):
    tree = variables.get(col, {})
    for p in path:
      tree = tree.get(p, {})
    if tree:
      out[col] = tree
  return out


def _static_block(variables, x, layers):
  """The block of ``layers`` (``blockqnn.to_layers``) built from concrete
  ops, reading the switch network's weights of the chosen types."""
  states = [x]
  for i, (kind, a, b) in enumerate(layers):
    k = blockqnn.TYPES.index(kind)
    v = _sub(variables, f"layer{i + 1}", f"ops_{k}")
    op = ops.make_op(blockqnn_net.TYPE_OPS[kind], C)
    if kind == "add":
      states.append(states[a] + states[b])
    elif kind == "concat":
      states.append(_apply(op, v, jnp.concatenate([states[a], states[b]],
                                                  -1)))
    else:
      states.append(_apply(op, v, states[a]))
  read = {a for _, a, _ in layers} | {b for _, _, b in layers if b >= 0}
  outs = [j for j in range(1, len(states)) if j not in read] or [0]
  # The concatenation of the outputs only, with their rows of the kernel.
  v = _sub(variables, "ReLUConvBN_0")
  kernel = v["params"]["Conv_0"]["kernel"]  # [1, 1, (M + 1) C, C]
  rows = np.concatenate([np.arange(j * C, (j + 1) * C) for j in outs])
  v["params"] = {**v["params"], "Conv_0": {"kernel": kernel[:, :, rows]}}
  return _apply(ops.make_op("conv_1x1", C), v,
                jnp.concatenate([states[j] for j in outs], -1))


def _static_net(variables, images, layers, num_cells):
  x = _apply(ops.Stem(C), _sub(variables, "Stem_0"), images)
  for c in range(num_cells):
    if c:
      x = cell_net._reduce(x)
    x = _static_block(_sub(variables, f"block{c}"), x, layers)
  return ops.Classifier(10).apply(_sub(variables, "Classifier_0"), x)


def test_switch_network_equals_static_blocks_with_one_compile():
  net = cell_net.make_network("blockqnn", num_cells=2, channels=C,
                              reduce_every=1)
  images = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
  variables = net.init(jax.random.key(1), images, jnp.asarray(CODES[0]),
                       False)
  traces = []

  @jax.jit
  def forward(variables, arch):
    traces.append(1)
    return net.apply(variables, images, arch, True,
                     mutable=["batch_stats"])[0]

  outs = []
  for code in CODES:
    got = forward(variables, jnp.asarray(code, jnp.int32))
    want = _static_net(variables, images, blockqnn.to_layers(SPACE, code), 2)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    outs.append(got)
  assert len(traces) == 1  # one program for every block
  assert len({np.asarray(o).tobytes() for o in outs}) == len(CODES)


def test_param_count_is_the_chosen_types_only():
  net = cell_net.make_network("blockqnn", num_cells=1, channels=C)
  images = jnp.zeros((1, 8, 8, 1))
  shapes = jax.eval_shape(lambda k, a: net.init(k, images, a, False),
                          jax.random.key(0), jnp.asarray(CODES[0]))
  params = jax.tree.map(lambda s: np.zeros(s.shape), shapes["params"])
  fixed = 9 * 1 * C + 2 * C + (M + 1) * C * C + 2 * C + C * 10 + 10
  # conv3 + add + terminal; concat + avg pool + conv5; pools only.
  assert cell_net.child_param_count(SPACE, params, CODES[0]) == (
      fixed + 9 * C * C + 2 * C)
  assert cell_net.child_param_count(SPACE, params, CODES[1]) == (
      fixed + (2 * C * C + 2 * C) + (25 * C * C + 2 * C))
  assert cell_net.child_param_count(SPACE, params, CODES[2]) == fixed


def test_network_rejects_a_code_of_the_wrong_shape():
  net = cell_net.make_network("blockqnn", channels=C)
  with pytest.raises(ValueError, match=r"3 \* max_layers"):
    net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros(4, int),
             False)
