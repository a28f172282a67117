"""The ENAS image supernet: one compilation for every child, real weight
sharing, only the chosen op runs (supernet == the static child), sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nas_jax.children import enas_cnn
from nas_jax.spaces import enas as enas_space

IMAGES = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
LABELS = jnp.array([0, 1, 2, 3])


def _micro():
  space = enas_space.micro_space(2)
  net = enas_cnn.MicroNet(num_classes=4, num_nodes=2, num_cells=1,
                          channels=4, num_reductions=1, stem_multiplier=1)
  return space, net


def _macro():
  space = enas_space.macro_space(3)
  return space, enas_cnn.MacroNet(num_classes=4, num_layers=3, channels=4)


class Net:
  """A network, its initial variables and its jitted steps, built once per
  module so the tests share compilations."""

  def __init__(self, space, net):
    self.space, self.net = space, net
    arch0 = jnp.zeros((space.num_decisions,), jnp.int32)
    self.variables = jax.jit(lambda k: net.init(k, IMAGES, arch0, False))(
        jax.random.key(1))
    self.step_traces, self.fwd_traces = [], []

    def step(params, stats, arch):
      """One SGD step (lr 0.5) of child ``arch``: (grads, params, stats,
      loss)."""
      self.step_traces.append(1)

      def loss_fn(p):
        logits, upd = net.apply({"params": p, "batch_stats": stats}, IMAGES,
                                arch, True, mutable=["batch_stats"])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
            logits, LABELS)), upd["batch_stats"]
      (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
      params = jax.tree.map(lambda p, d: p - 0.5 * d, params, g)
      return g, params, stats, loss

    def fwd(variables, arch):
      self.fwd_traces.append(1)
      return net.apply(variables, IMAGES, arch, False)

    self.step, self.fwd = jax.jit(step), jax.jit(fwd)

  def grads(self, arch):
    return self.step(self.variables["params"], self.variables["batch_stats"],
                     jnp.asarray(arch))


@pytest.fixture(scope="module")
def micro():
  return Net(*_micro())


@pytest.fixture(scope="module")
def macro():
  return Net(*_macro())


def _children(space, n, seed=0):
  keys = jax.random.split(jax.random.key(seed), n)
  archs = np.asarray(jax.vmap(space.sample_uniform)(keys))
  assert len({a.tobytes() for a in archs}) == n  # all different
  return archs


@pytest.mark.parametrize("name", ["micro", "macro"])
def test_one_compilation_serves_ten_children(name, request):
  m = request.getfixturevalue(name)
  params, stats = m.variables["params"], m.variables["batch_stats"]
  losses = []
  n_step, n_fwd = len(m.step_traces), len(m.fwd_traces)
  for arch in _children(m.space, 10):
    _, params, stats, loss = m.step(params, stats, jnp.asarray(arch))
    m.fwd({"params": params, "batch_stats": stats}, jnp.asarray(arch))
    losses.append(float(loss))
  # At most one trace each (none if another test compiled them first).
  assert len(m.step_traces) - n_step <= 1 and len(m.step_traces) == 1
  assert len(m.fwd_traces) - n_fwd <= 1 and len(m.fwd_traces) == 1
  assert np.all(np.isfinite(losses)) and len(set(losses)) == 10


@pytest.mark.parametrize("name", ["micro", "macro"])
def test_supernet_equals_the_static_child(name, request):
  """Only the chosen op runs, with the shared weights: the supernet's output
  for a child equals the fixed network (no switch) given that child's slice
  of the weights."""
  m = request.getfixturevalue(name)
  arch = _children(m.space, 1, seed=3)[0]
  fixed = m.net.clone(fixed_arch=tuple(int(v) for v in arch))
  fv = enas_cnn.fixed_variables(fixed, m.variables, arch)
  want = m.fwd(m.variables, jnp.asarray(arch))
  got = jax.jit(lambda v: fixed.apply(v, IMAGES, None, False))(fv)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # The fixed network has exactly the child's weights: nothing missing,
  # nothing extra.
  ref = jax.eval_shape(lambda: fixed.init(jax.random.key(0), IMAGES, None,
                                          False))
  assert (jax.tree.structure(ref["params"])
          == jax.tree.structure(fv["params"]))


def _norm(tree):
  return float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)))


def test_sharing_is_real_micro(micro):
  m = micro
  # Two children that both apply sep_conv_3x3 (op 1) to node 0's input a in
  # the normal cell, and differ where they can.
  a = np.zeros(m.space.num_decisions, np.int32)
  b = np.zeros(m.space.num_decisions, np.int32)
  a[2], b[2] = 1, 1          # normal/node0/op_a: sep_conv_3x3 in both
  a[3], b[3] = 2, 4          # node0/op_b: sep 5x5 vs max pool
  a[6], b[6] = 3, 2          # node1/op_a: avg pool vs sep 5x5
  ga, stepped, _, _ = m.grads(a)
  gb = m.grads(b)[0]
  # Both children read (and train) the same parameters ...
  assert _norm(ga["cell0"]["node0_a"]["ops_1"]) > 0
  assert _norm(gb["cell0"]["node0_a"]["ops_1"]) > 0
  # ... and only their chosen ops: a never touches node1_a's sep 5x5.
  assert _norm(ga["cell0"]["node1_a"]["ops_2"]) == 0.0
  assert _norm(gb["cell0"]["node1_a"]["ops_2"]) > 0.0
  # A step on child a changes what child b computes ...
  before = m.fwd(m.variables, jnp.asarray(b))
  after = m.fwd({**m.variables, "params": stepped}, jnp.asarray(b))
  assert float(jnp.max(jnp.abs(after - before))) > 1e-4
  # ... through the shared op too: writing only a's update of the shared
  # sep 3x3 into the old weights changes b's output.
  partly = dict(m.variables["params"])
  partly["cell0"] = dict(partly["cell0"])
  partly["cell0"]["node0_a"] = {**partly["cell0"]["node0_a"],
                                "ops_1": stepped["cell0"]["node0_a"]["ops_1"]}
  changed = m.fwd({**m.variables, "params": partly}, jnp.asarray(b))
  assert float(jnp.max(jnp.abs(changed - before))) > 1e-5


def test_sharing_is_real_macro(macro):
  m = macro
  # layer0 conv_3x3 in both; layer1 conv_5x5 vs max pool; skips differ.
  a = np.array([0, 1, 1, 2, 0, 1], np.int32)
  b = np.array([0, 4, 0, 5, 1, 0], np.int32)
  ga, stepped, _, _ = m.grads(a)
  gb = m.grads(b)[0]
  assert _norm(ga["layer0"]["ops_0"]) > 0 and _norm(gb["layer0"]["ops_0"]) > 0
  assert _norm(ga["layer1"]["ops_1"]) > 0 and _norm(gb["layer1"]["ops_1"]) == 0
  before = m.fwd(m.variables, jnp.asarray(b))
  after = m.fwd({**m.variables, "params": stepped}, jnp.asarray(b))
  assert float(jnp.max(jnp.abs(after - before))) > 1e-4


def test_skip_bits_change_the_output(macro):
  base_arch = np.array([4, 4, 0, 4, 0, 0], np.int32)   # max pools, no skips
  skip = base_arch.copy()
  skip[4] = 1                                          # layer2 <- stem
  y0 = macro.fwd(macro.variables, jnp.asarray(base_arch))
  y1 = macro.fwd(macro.variables, jnp.asarray(skip))
  assert float(jnp.max(jnp.abs(y1 - y0))) > 1e-4


def test_loose_ends_hand_computed():
  # 3 nodes; node0 reads (0, 1); node1 reads (2 = node0, 1); node2 reads
  # (0, 1): node0 is read by node1; node1 and node2 are loose ends.
  cell = np.array([0, 1, 0, 0, 2, 1, 0, 0, 0, 1, 0, 0])
  np.testing.assert_array_equal(enas_cnn.loose_ends(cell, 3),
                                [False, True, True])
  np.testing.assert_array_equal(
      np.asarray(jax.jit(lambda c: enas_cnn.loose_ends(c, 3))(cell)),
      [False, True, True])


def test_factorized_reduce_odd_size():
  fr = enas_cnn.FactorizedReduce(6)
  x = jnp.ones((2, 7, 7, 3))
  v = fr.init(jax.random.key(0), x, False)
  assert fr.apply(v, x, False).shape == (2, 4, 4, 6)


def test_impossible_size_is_a_clear_error():
  net = enas_cnn.MicroNet(num_classes=4, num_nodes=2, num_cells=1,
                          channels=4, num_reductions=4)
  with pytest.raises(enas_cnn.ImpossibleSizeError,
                     match=r"4 stride-2 reductions need images of at least "
                           r"16 pixels.*use at most 3 reductions"):
    net.init(jax.random.key(0), IMAGES, jnp.zeros((16,), jnp.int32), False)


def test_published_architectures_hand_converted():
  """The authors' (x_input, x_op, y_input, y_op) with ops (sep3, sep5, avg,
  max, identity) -> our (input_a, input_b, op_a, op_b) with ops (identity,
  sep3, sep5, avg, max): their first normal node "0 2 0 0" is avg pool of
  input 0 plus sep 3x3 of input 0, i.e. (0, 0, 3, 1)."""
  space, arch = enas_space.named("enas_micro_paper")
  assert arch[:4].tolist() == [0, 0, 3, 1]
  assert arch[4:8].tolist() == [0, 0, 0, 2]   # "0 4 0 1": identity + sep5
  assert arch[20:24].tolist() == [1, 1, 1, 1]  # reduce "1 0 1 0": sep3 x2
  space, arch = enas_space.named("enas_macro_paper")
  assert space.num_decisions == 24 * 25 // 2
  # Layer 1 is "3 0": the authors' op 3 (sep 5x5), no skip.
  assert space.decisions[1].name == "layer1/op"
  assert enas_space.MACRO_OPS[arch[1]] == "sep_conv_5x5"
  assert arch[0] == enas_space.MACRO_OPS.index("conv_3x3")
  # Layer 2 "0 1 0": conv 3x3, skip from 0 on, from 1 off.
  assert arch[3:6].tolist() == [0, 1, 0]
  with pytest.raises(enas_space.base.InvalidArchitectureError,
                     match="authors' micro op ids are 0..4"):
    enas_space.from_authors_micro("0 9 0 0", "0 0 0 0")
  with pytest.raises(enas_space.base.InvalidArchitectureError,
                     match="not such a number"):
    enas_space.from_authors_macro("0 1 0 1")


@pytest.mark.parametrize("name", ["enas_micro_paper", "enas_macro_paper"])
def test_published_architectures_build_as_fixed_networks(name):
  space, arch = enas_space.named(name)
  if name == "enas_micro_paper":
    net = enas_cnn.MicroNet(num_classes=10, num_nodes=5, num_cells=1,
                            channels=36, fixed_arch=tuple(arch.tolist()))
  else:
    net = enas_cnn.MacroNet(num_classes=10, num_layers=24, channels=96,
                            grow_channels=True,
                            fixed_arch=tuple(arch.tolist()))
  shapes = jax.eval_shape(lambda: net.init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), None, False))
  # (N = 5 gives 3.45M for the micro cells, 18.8M for the macro network;
  # the paper reports 4.6M and 21.3M with its auxiliary head / 1x1 skips.)
  assert enas_cnn.param_count(shapes["params"]) > 500_000
