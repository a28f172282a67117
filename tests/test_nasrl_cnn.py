"""The NAS-RL layered CNN (Zoph & Le 2017, Sec. 3.1/3.3): the padded
one-program network equals the same child built statically, forward and
gradients; one compilation serves many children; bad codes fail early.

Tiny sizes (8x8 images, 3 layers) keep compile time down.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nas_jax.children import cell_net
from nas_jax.children import nasrl_cnn
from nas_jax.spaces import nasrl
from nas_jax.spaces.base import InvalidArchitectureError

L = 3
HW = (8, 8)
CH = 2
NUM_CLASSES = 3


def _images(seed=0, n=4):
  return jax.random.normal(jax.random.key(seed), (n, *HW, CH))


def _code(space, **by_name):
  """A code with every decision 0 except ``by_name`` (names use '__' for
  '/')."""
  names = [d.name for d in space.decisions]
  arch = np.zeros(space.num_decisions, np.int32)
  for k, v in by_name.items():
    arch[names.index(k.replace("__", "/"))] = v
  return space.validate(arch)


def test_decode_follows_the_paper_rules():
  space = nasrl.space(num_layers=4)
  # Layer 2 reads layers 0 and 1; layer 3 reads nothing (-> the image);
  # layer 1 has stride 3; nobody reads 2 and 3 -> they feed the classifier.
  arch = _code(space, layer2__skip_from0=1, layer2__skip_from1=1,
               layer1__stride=2, layer0__filter_height=3,
               layer0__num_filters=2)
  child = nasrl_cnn.validate(arch, (9, 9), 4)
  assert child.height == (7, 1, 1, 1) and child.width == (1, 1, 1, 1)
  assert child.filters == (48, 24, 24, 24)
  assert child.stride == (1, 3, 1, 1)
  assert child.inputs == ((), (), (0, 1), ())
  assert child.loose == (2, 3)
  # Layer 1 reads the 9x9 image at stride 3; layer 2 pads 3x3 to 9x9.
  assert child.sizes == ((9, 9), (3, 3), (9, 9), (9, 9))
  chain = nasrl_cnn.decode(np.zeros(4 * 3, int), 4, False, False)
  assert chain.inputs == ((), (0,), (1,), (2,)) and chain.loose == (3,)


def test_strides_below_one_pixel_fail_before_compiling():
  space = nasrl.space(num_layers=3)
  arch = _code(space, layer0__stride=2, layer1__stride=2,
               layer1__skip_from0=1, layer2__stride=0, layer2__skip_from1=1)
  with pytest.raises(InvalidArchitectureError,
                     match=r"0x0 pixels at layer 1.*fewer stride>1 layers"
                     r".*larger input.*search_strides=False"):
    nasrl_cnn.validate(arch, HW, 3)
  nasrl_cnn.validate(arch, (9, 9), 3)  # 9 -> 3 -> 1: fine
  # The config-level check: some code of the space could shrink too far.
  with pytest.raises(ValueError, match=r"3\^3 = 27 > 8.*at most 1 layers"
                     r".*search_strides=False"):
    nasrl_cnn.check_image_size(HW, 3, True)
  nasrl_cnn.check_image_size(HW, 3, False)
  nasrl_cnn.check_image_size((27, 27), 3, True)
  net = cell_net.make_network("nasrl", num_layers=3)
  with pytest.raises(ValueError, match="search_strides=False"):
    net.init(jax.random.key(0), _images(), jnp.zeros(12, jnp.int32), False)
  with pytest.raises(InvalidArchitectureError, match="has 12 values, got 10"):
    nasrl_cnn.decode(np.zeros(10), 3, False, True)


def _random_archs(space, n, seed):
  rng = np.random.default_rng(seed)
  return [space.validate([rng.integers(d.num_choices)
                          for d in space.decisions]) for _ in range(n)]


@pytest.mark.parametrize("search_strides", [False, True])
def test_padded_child_equals_static_child(search_strides):
  """Forward (train and eval mode), BN statistics and gradients of the
  padded network with arch input equal the static child's, for several
  random children -- and the padded step compiles once for all of them."""
  # 9x9 images: two stride-3 layers still leave a pixel.
  n_layers, hw = (2, (9, 9)) if search_strides else (L, HW)
  images = jax.random.normal(jax.random.key(1), (4, *hw, CH))
  labels = jnp.array([0, 1, 2, 0])
  space = nasrl.space(n_layers, search_strides=search_strides)
  net = nasrl_cnn.NasrlCNN(num_layers=n_layers,
                           search_strides=search_strides,
                           num_classes=NUM_CLASSES)
  archs = _random_archs(space, 3 - search_strides, seed=int(search_strides))
  if search_strides:  # make sure strides 2 and 3 and a skip are exercised
    archs[0] = _code(space, layer0__stride=1, layer1__stride=2,
                     layer1__skip_from0=1, layer1__filter_height=2)
    archs[1] = _code(space, layer0__stride=2, layer1__stride=1,
                     layer0__num_filters=3)
  traces = []

  def loss(net, variables, arch, params):
    logits, upd = net.apply({"params": params,
                             "batch_stats": variables["batch_stats"]},
                            images, arch, True, mutable=["batch_stats"])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits, labels)), (logits, upd["batch_stats"])

  @jax.jit
  def padded_step(variables, arch):
    traces.append(1)
    (l, (logits, stats)), g = jax.value_and_grad(
        lambda p: loss(net, variables, arch, p), has_aux=True)(
            variables["params"])
    return l, logits, stats, g, net.apply(variables, images, arch, False)

  init = jax.jit(lambda k, a: net.init(k, images[:1], a, False))
  for n, arch in enumerate(archs):
    variables = init(jax.random.key(n), jnp.asarray(arch))
    l, logits, stats, grads, eval_logits = padded_step(variables,
                                                       jnp.asarray(arch))
    static = nasrl_cnn.NasrlCNN(
        num_layers=n_layers, search_strides=search_strides, num_classes=NUM_CLASSES,
        fixed_arch=tuple(int(v) for v in arch))
    sv = nasrl_cnn.static_variables(net, variables, arch, hw, CH)
    (sl, (slogits, sstats)), sg = jax.jit(jax.value_and_grad(
        lambda p: loss(static, sv, None, p), has_aux=True))(sv["params"])
    np.testing.assert_allclose(logits, slogits, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(l, sl, rtol=2e-5)
    np.testing.assert_allclose(eval_logits,
                               static.apply(sv, images, None, False),
                               rtol=2e-4, atol=2e-5)
    g_cut = nasrl_cnn.static_variables(
        net, {"params": grads, "batch_stats": stats}, arch, hw, CH)
    for a, b in zip(jax.tree.leaves(g_cut["params"]), jax.tree.leaves(sg)):
      np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-6)
    for a, b in zip(jax.tree.leaves(g_cut["batch_stats"]),
                    jax.tree.leaves(sstats)):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    # The child's own parameter count, from the padded parameters.
    assert cell_net.child_param_count(space, variables["params"], arch) == (
        sum(np.size(v) for v in jax.tree.leaves(sv["params"])))
    # Weights outside the child get no gradient.
    child = nasrl_cnn.decode(arch, n_layers, search_strides, True, hw)
    k0 = np.asarray(grads["layer0_kernel"])
    assert not np.any(k0[:, :, :, child.filters[0]:])
  assert len(traces) == 1  # one program for every child of the depth


def test_init_scale_follows_the_childs_fan_in():
  net = nasrl_cnn.NasrlCNN(num_layers=1, search_strides=False,
                           skip_connections=False, num_classes=2)
  for fh, fan in ((0, 1 * 1 * CH), (3, 7 * 7 * CH)):
    arch = jnp.array([fh, fh, 3], jnp.int32)
    v = jax.jit(net.init, static_argnums=3)(jax.random.key(0), _images(),
                                            arch, False)
    k = np.asarray(v["params"]["layer0_kernel"])
    assert abs(k.std() / np.sqrt(1 / fan) - 1) < 0.1, (fh, k.std())


def test_child_trainer_trains_nasrl_children():
  """``make_network("nasrl")`` plugs into ``ChildTrainer``: two children of
  the registry's space train and are scored with one compiled step, and
  their parameter counts are the static children's."""
  from nas_jax.data import datasets  # pylint: disable=g-import-not-at-top
  from nas_jax.evaluators import train_from_scratch  # pylint: disable=g-import-not-at-top
  from nas_jax.spaces import registry  # pylint: disable=g-import-not-at-top
  space = registry.get("nasrl", num_layers=2, search_strides=False)
  ds = datasets.load("digits", num_val=32, max_train=64)
  net = cell_net.make_network("nasrl", num_layers=2, search_strides=False,
                              num_classes=ds.num_classes)
  trainer = train_from_scratch.ChildTrainer(space, net, ds, epochs=1,
                                            batch_size=32)
  for arch in _random_archs(space, 2, seed=5):
    result = trainer.train_and_evaluate(arch)
    assert 0.0 <= result.val_accuracy <= 1.0
    assert np.isfinite(result.train_loss)
    child = nasrl_cnn.decode(arch, 2, False, True)
    cin = [sum(child.filters[j] for j in ins) or 1 for ins in child.inputs]
    expected = sum(h * w * c * f + 2 * f for h, w, c, f in zip(
        child.height, child.width, cin, child.filters))
    expected += sum(child.filters[j] for j in child.loose) * 10 + 10
    assert result.num_params == expected
  assert trainer.num_traces == 1
