"""Tests of the op library, the seed-003 spaces and their child networks.

Kept tiny (8x8 images, 4 channels) because the machine is shared; the key
property is that ONE compiled train step serves every child of a space.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nas_jax.children import cell_net, ops
from nas_jax.spaces import enas, nasnet, registry, seed003
from nas_jax.spaces.base import InvalidArchitectureError

C = 4  # Channels everywhere.


def _x(shape=(2, 8, 8, C), seed=0):
  return jax.random.normal(jax.random.key(seed), shape)


def _changed(a, b) -> bool:
  return bool(jnp.any(a != b))


# -- ops ----------------------------------------------------------------------


def test_every_space_op_is_in_the_library():
  for names in (seed003.OPS, nasnet.OPS, enas.MICRO_OPS, enas.MACRO_OPS):
    assert set(names) <= set(ops.OPS), set(names) - set(ops.OPS)
  with pytest.raises(ValueError, match="no_such_op.*conv_3x3"):
    ops.make_op("no_such_op", C)


@pytest.mark.parametrize("name", sorted(ops.OPS))
def test_op_preserves_shape_and_is_finite(name):
  x = _x()
  op = ops.make_op(name, C)
  variables = op.init(jax.random.key(1), x, False)
  y_eval = op.apply(variables, x, False)
  y_train, updates = op.apply(variables, x, True, mutable=["batch_stats"])
  for y in (y_eval, y_train):
    assert y.shape == x.shape
    assert y.dtype == x.dtype
    assert bool(jnp.all(jnp.isfinite(y)))
  has_weights = "params" in variables
  assert has_weights == (name != "identity" and "pool" not in name)
  if has_weights:  # Train-mode BN normalizes with the batch statistics.
    assert _changed(y_eval, y_train)
    assert "batch_stats" in updates


def test_op_layouts():
  """The documented layouts: sep conv twice, dilation 2, factorized pair."""
  x = _x()

  def shapes(name):
    v = ops.make_op(name, C).init(jax.random.key(0), x, False)
    return jax.tree.map(jnp.shape, v["params"])

  sep = shapes("sep_conv_5x5")
  assert sorted(sep) == ["BatchNorm_0", "BatchNorm_1", "Conv_0", "Conv_1",
                         "Conv_2", "Conv_3"]
  assert sep["Conv_0"]["kernel"] == (5, 5, 1, C)  # Depthwise.
  assert sep["Conv_1"]["kernel"] == (1, 1, C, C)  # Pointwise.
  fac = shapes("conv_1x3_3x1")
  assert fac["Conv_0"]["kernel"] == (1, 3, C, C)
  assert fac["Conv_1"]["kernel"] == (3, 1, C, C)
  assert shapes("conv_7x7")["Conv_0"]["kernel"] == (7, 7, C, C)
  # A 3x3 kernel with dilation 2 reaches 2 pixels away, not 3.
  dil = ops.make_op("dil_conv_3x3", C)
  impulse = jnp.zeros((1, 9, 9, C)).at[0, 4, 4, :].set(1.0)
  v = dil.init(jax.random.key(0), impulse, False)
  # Only the conv sees the impulse (ReLU keeps it); compare against BN(0).
  y = dil.apply(v, impulse, False) - dil.apply(v, 0 * impulse, False)
  reach = np.argwhere(np.any(np.abs(np.asarray(y[0])) > 1e-6, axis=-1))
  assert set(reach[:, 0]) == {2, 4, 6} and set(reach[:, 1]) == {2, 4, 6}


def test_pools_by_hand():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  # Average pooling excludes the padding: a constant image stays constant.
  for k in (2, 3, 5, 7):
    avg = ops.make_op(f"avg_pool_{k}x{k}", 1)
    np.testing.assert_allclose(avg.apply({}, jnp.ones_like(x), False), 1.0)
  # 2x2 SAME at stride 1 pads after: out[i, j] = mean x[i:i+2, j:j+2].
  a = np.arange(16.0).reshape(4, 4)
  want = np.array([[a[i:i + 2, j:j + 2].mean() for j in range(4)]
                   for i in range(4)])
  got = ops.make_op("avg_pool_2x2", 1).apply({}, x, False)[0, :, :, 0]
  np.testing.assert_allclose(got, want)
  got = ops.make_op("max_pool_3x3", 1).apply({}, x, False)[0, :, :, 0]
  want = np.array([[a[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].max()
                    for j in range(4)] for i in range(4)])
  np.testing.assert_allclose(got, want)


def test_switch_op_matches_the_chosen_op():
  """Same output and same BN update as the op applied on its own."""
  x = _x()
  sw = ops.SwitchOp(seed003.OPS, C)
  variables = sw.init(jax.random.key(2), x, 0, False)
  # Every candidate's variables exist after init.
  weighted = [k for k, n in enumerate(seed003.OPS)
              if n not in ("identity", "max_pool_2x2", "avg_pool_2x2")]
  assert sorted(variables["params"]) == [f"ops_{k}" for k in weighted]
  assert sorted(variables["batch_stats"]) == [f"ops_{k}" for k in weighted]

  traces = []

  @jax.jit
  def run(v, index):
    traces.append(1)
    y_eval = sw.apply(v, x, index, False)
    y_train, upd = sw.apply(v, x, index, True, mutable=["batch_stats"])
    return y_eval, y_train, upd["batch_stats"]

  for k, name in enumerate(seed003.OPS):
    y_eval, y_train, stats = run(variables, jnp.int32(k))
    sub = {c: variables[c][f"ops_{k}"] for c in variables
           if f"ops_{k}" in variables[c]}
    op = ops.make_op(name, C)
    np.testing.assert_allclose(y_eval, op.apply(sub, x, False), atol=1e-6)
    want, want_upd = op.apply(sub, x, True, mutable=["batch_stats"])
    np.testing.assert_allclose(y_train, want, atol=1e-6)
    # BN through nn.switch: the chosen op's statistics move exactly as on
    # their own, the other ops' statistics are untouched.
    for j in weighted:
      old = variables["batch_stats"][f"ops_{j}"]
      new = stats[f"ops_{j}"]
      if j == k:
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                     new, want_upd["batch_stats"])
        assert jax.tree.reduce(lambda acc, ab: acc or ab, jax.tree.map(
            _changed, old, new))
      else:
        jax.tree.map(np.testing.assert_array_equal, new, old)
  assert len(traces) == 1


# -- seed-003 spaces ----------------------------------------------------------


def test_small_space():
  space = registry.get("seed003_small")
  assert space.num_decisions == 2
  assert space.num_architectures == 8 * 8 == 64
  codes = np.stack([space.from_index(i) for i in range(64)])
  assert len({tuple(c) for c in codes}) == 64
  texts = {space.to_text(c) for c in codes}
  assert len(texts) == 64
  for c in codes:
    np.testing.assert_array_equal(space.from_text(space.to_text(c)), c)
    np.testing.assert_array_equal(space.from_text(",".join(map(str, c))), c)
  # The study's two best cells.
  best = space.from_text("conv_5x5>conv_1x3_3x1")
  np.testing.assert_array_equal(best, [3, 0])
  assert space.to_text([2, 4]) == "sep_conv_3x3>conv_7x7"
  assert space.from_text(" sep_conv_3x3 > conv_7x7 ").tolist() == [2, 4]
  assert {d.head for d in space.decisions} == {"seed003_op"}


def test_large_space():
  space = registry.get("seed003_large")
  assert space.num_decisions == 6
  assert space.num_architectures == (1 * 8) * (2 * 8) * (3 * 8) == 3072
  assert registry.get("seed003_large", num_nodes=2).num_architectures == 128
  texts = set()
  for i in range(space.num_architectures):
    code = space.from_index(i)
    text = space.to_text(code)
    texts.add(text)
    np.testing.assert_array_equal(space.from_text(text), code)
  assert len(texts) == 3072
  arch = space.from_text("x>conv_3x3;n0>sep_conv_3x3;x>identity")
  np.testing.assert_array_equal(arch, [0, 1, 1, 2, 0, 7])
  assert space.to_text([0, 4, 0, 5, 2, 7]) == (
      "x>conv_7x7;x>max_pool_2x2;n1>identity")
  np.testing.assert_array_equal(space.from_text("0,4,0,5,2,7"),
                                [0, 4, 0, 5, 2, 7])
  with pytest.raises(ValueError, match="num_nodes"):
    seed003.large_space(0)


@pytest.mark.parametrize("name, arch, fragment", [
    ("seed003_small", [8, 0], "op1.*0..7"),
    ("seed003_small", [0, -1], "op2.*0..7"),
    ("seed003_small", [0, 0, 0], "length 2"),
    ("seed003_large", [1, 0, 0, 0, 0, 0], "node0/input.*0..0"),
    ("seed003_large", [0, 0, 2, 0, 0, 0], "node1/input.*0..1"),
    ("seed003_large", [0, 0, 0, 0, 3, 0], "node2/input.*0..2"),
    ("seed003_large", [0, 0, 0, 8, 0, 0], "node1/op.*0..7"),
])
def test_invalid_codes_are_rejected(name, arch, fragment):
  space = registry.get(name)
  for fn in (space.validate, space.to_text, space.to_spec):
    with pytest.raises(InvalidArchitectureError, match=fragment):
      fn(np.array(arch))
  if len(arch) == space.num_decisions:
    assert not bool(space.is_valid(jnp.array(arch)))


@pytest.mark.parametrize("name, text, fragment", [
    ("seed003_small", "", "two ops"),
    ("seed003_small", "conv_5x5", "two ops"),
    ("seed003_small", "conv_5x5>conv_3x3>identity", "two ops"),
    ("seed003_small", "conv_9x9>conv_3x3", "unknown op 'conv_9x9' in op1"),
    ("seed003_small", "3,8", "op2.*0..7"),
    ("seed003_small", "0,1,x", "cannot parse"),
    ("seed003_large", "", "0 nodes|1 nodes"),
    ("seed003_large", "x>conv_3x3;x>conv_3x3", "2 nodes"),
    ("seed003_large", "x>conv_3x3;n1>conv_3x3;x>identity",
     "node 1 .* reads 'n1'.*x or n0..n0"),
    ("seed003_large", "n0>conv_3x3;x>conv_3x3;x>identity",
     "node 0 .* only read x"),
    ("seed003_large", "y>conv_3x3;x>conv_3x3;x>identity", "unknown source"),
    ("seed003_large", "x conv_3x3;x>conv_3x3;x>identity",
     "cannot parse node 0"),
    ("seed003_large", "x>conv_3x3;x>conv3x3;x>identity",
     "unknown op 'conv3x3' in node 1"),
    ("seed003_large", "0,0,2,0,0,0", "node1/input"),
])
def test_bad_text_is_rejected(name, text, fragment):
  with pytest.raises(InvalidArchitectureError, match=fragment):
    registry.get(name).from_text(text)


# -- networks: one compiled train step for every child ------------------------

BATCH = 4
TX = optax.sgd(0.1, momentum=0.9)


def _archs(space, n=10) -> list[np.ndarray]:
  if space.name == "seed003_small":
    # All 8 ops in both positions; the last two are the study's best cells.
    pairs = [(k, (3 * k + 1) % 8) for k in range(8)] + [(3, 0), (2, 4)]
    return [space.validate(p) for p in pairs]
  archs = {}
  key = jax.random.key(7)
  while len(archs) < n:
    key, sub = jax.random.split(key)
    a = np.asarray(space.sample_uniform(sub))
    archs[tuple(a)] = a
  return list(archs.values())


@pytest.fixture(scope="module", params=["seed003_small", "seed003_large"])
def trained(request):
  """Runs one jitted train step per architecture from the same start."""
  name = request.param
  space = registry.get(name)
  # Two cells (with a reduction between them) for the chain; one cell for
  # the branching net keeps its compile time down.
  num_cells = 2 if name == "seed003_small" else 1
  net = cell_net.make_network(name, num_cells=num_cells, channels=C,
                              num_classes=3)
  images = _x((BATCH, 8, 8, 1), seed=3)
  labels = jnp.array([0, 1, 2, 0])
  variables = net.init(jax.random.key(0), images,
                       jnp.zeros(space.num_decisions, jnp.int32), False)
  opt_state = TX.init(variables["params"])
  traces = []

  @jax.jit
  def train_step(params, batch_stats, opt_state, arch, images, labels):
    traces.append(1)  # A Python side effect: runs once per trace only.

    def loss_fn(p):
      logits, updates = net.apply({"params": p, "batch_stats": batch_stats},
                                  images, arch, True, mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return loss.mean(), (logits, updates["batch_stats"])

    (loss, (logits, new_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params)
    updates, opt_state = TX.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), new_stats, opt_state,
            loss, logits, grads)

  results = []
  for arch in _archs(space):
    results.append(train_step(variables["params"], variables["batch_stats"],
                              opt_state, jnp.asarray(arch), images, labels))
  return space, variables, _archs(space), results, traces, train_step


def test_one_compilation_serves_every_child(trained):
  space, _, archs, results, traces, train_step = trained
  assert len(archs) == 10
  assert len(traces) == 1
  assert train_step._cache_size() == 1
  for r in results:
    assert bool(jnp.isfinite(r[3]))
  # The arch really selects different ops: every child computes something
  # else from the same weights and images.
  logits = np.stack([np.asarray(r[4]) for r in results])
  for i in range(len(archs)):
    for j in range(i):
      assert not np.allclose(logits[i], logits[j], atol=1e-5), (
          space.to_text(archs[i]), space.to_text(archs[j]))


def test_train_step_updates_params_and_batch_stats(trained):
  space, variables, archs, results, _, _ = trained
  params, stats = variables["params"], variables["batch_stats"]
  for arch, (new_params, new_stats, *_, grads) in zip(archs, results):
    # The stem's BN runs for every child.
    assert _changed(new_stats["Stem_0"]["BatchNorm_0"]["mean"],
                    stats["Stem_0"]["BatchNorm_0"]["mean"])
    assert _changed(new_params["Classifier_0"]["Dense_0"]["kernel"],
                    params["Classifier_0"]["Dense_0"]["kernel"])
    # In the first cell, chosen ops' BN moves, unchosen ones' does not,
    # and unchosen ops get zero gradients.
    switches = (["op1", "op2"] if space.name == "seed003_small"
                else [f"node{i}" for i in range(space.num_decisions // 2)])
    op_codes = arch if space.name == "seed003_small" else arch[1::2]
    for switch, chosen in zip(switches, op_codes):
      cell_stats = stats["cell0"][switch]
      cell_new = new_stats["cell0"][switch]
      for k in range(len(seed003.OPS)):
        sub = f"ops_{k}"
        if sub not in cell_stats:  # Identity and pools have no BN.
          continue
        bn = jax.tree.leaves(jax.tree.map(_changed, cell_stats[sub],
                                          cell_new[sub]))
        g = jax.tree.leaves(jax.tree.map(lambda a: bool(jnp.any(a != 0)),
                                         grads["cell0"][switch][sub]))
        if k == chosen:
          assert all(bn) and any(g), (switch, seed003.OPS[k])
        else:
          assert not any(bn) and not any(g), (switch, seed003.OPS[k])


def test_network_errors():
  with pytest.raises(ValueError, match="darts.*nasnet.*seed003_small"):
    cell_net.make_network("darts")
  net = cell_net.make_network("seed003_small", num_cells=1, channels=C)
  with pytest.raises(ValueError, match=r"shape \(2,\)"):
    net.init(jax.random.key(0), _x((1, 8, 8, 1)), jnp.zeros(6, jnp.int32),
             False)


# -- branching cell: loose ends by hand ---------------------------------------


def test_loose_ends():
  f = jax.jit(cell_net.loose_ends, static_argnums=1)
  # (input, op) per node; the op values do not matter.
  cases = {
      (0, 0, 0, 0, 0, 0): [True, True, True],  # All read x.
      (0, 0, 1, 0, 2, 0): [False, False, True],  # A chain.
      (0, 0, 0, 0, 1, 0): [False, True, True],  # Node 2 reads node 0.
      (0, 0, 1, 0, 1, 0): [False, True, True],  # Node 0 branches.
  }
  for arch, want in cases.items():
    assert f(jnp.array(arch), 3).tolist() == want, arch


def _np_max_pool3(a):
  """3x3 max pool, stride 1, SAME, on [B, H, W, C]."""
  p = np.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  h, w = a.shape[1:3]
  return np.max([p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)],
                axis=0)


def _np_avg_pool3(a):
  """3x3 average pool, stride 1, SAME, padding not counted."""
  h, w = a.shape[1:3]
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  p, ones = np.pad(a, pad), np.pad(np.ones_like(a), pad)
  total = sum(p[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
  count = sum(ones[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
  return total / count


@pytest.mark.parametrize("residual", [False, True])
def test_branching_cell_output_is_the_mean_of_loose_ends(residual):
  # Weightless ops, so the expected output follows from the input alone.
  cell = cell_net.BranchingCell(("identity", "max_pool_3x3", "avg_pool_3x3"),
                                C, num_nodes=3, residual=residual)
  x = np.asarray(_x((2, 6, 6, C), seed=5))
  mx, av = _np_max_pool3, _np_avg_pool3
  cases = {
      # n0 = max(x), n1 = avg(x), n2 = n0; loose: n1, n2.
      (0, 1, 0, 2, 1, 0): (av(x) + mx(x)) / 2,
      # A chain x -> max -> avg -> max; loose: n2 only.
      (0, 1, 1, 2, 2, 1): mx(av(mx(x))),
      # All read x: mean of x, max(x), avg(x).
      (0, 0, 0, 1, 0, 2): (x + mx(x) + av(x)) / 3,
      # n0 = avg(x), n1 = max(n0), n2 = avg(n0); loose: n1, n2.
      (0, 2, 1, 1, 1, 2): (mx(av(x)) + av(av(x))) / 2,
  }
  apply = jax.jit(lambda arch: cell.apply({}, jnp.asarray(x), arch, False))
  for arch, want in cases.items():
    got = apply(jnp.array(arch, jnp.int32))
    np.testing.assert_allclose(got, want + (x if residual else 0),
                               rtol=1e-5, atol=1e-5, err_msg=str(arch))
  assert apply._cache_size() == 1


def test_child_param_count_counts_only_the_chosen_ops():
  """conv_3x3 (ReLU-conv-BN: 3*3*C*C kernel + 2C BN) then identity (0), per
  cell, plus the stem and classifier; a pooling child has only those."""
  from nas_jax.children.cell_net import child_param_count
  space = seed003.small_space()
  c = 4
  net = cell_net.make_network("seed003_small", num_classes=10, num_cells=2,
                              channels=c)
  arch = space.from_text("conv_3x3>identity")
  params = jax.jit(lambda k: net.init(k, jnp.zeros((1, 8, 8, 1)),
                                      jnp.asarray(arch), False))(
                                          jax.random.key(0))["params"]
  stem_and_head = child_param_count(space, params,
                                    space.from_text("max_pool_2x2>identity"))
  per_conv = 3 * 3 * c * c + 2 * c
  assert child_param_count(space, params, arch) == stem_and_head + 2 * per_conv
  total = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  assert child_param_count(space, params, arch) < total
