"""Tests of the search-space families and the registry (nas_jax/spaces)."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.spaces import base, enas, nasbench201, nasnet, nasrl, registry
from nas_jax.spaces.base import InvalidArchitectureError

NUM_SAMPLES = 1000

# (name, kwargs, num_decisions, num_architectures), all counted by hand from
# the papers' descriptions rather than from the code under test.
_CELL5 = math.prod((i + 2)**2 for i in range(5))  # Pointer ranges 2..6, twice.
CASES = [
    ("nasbench201", {}, 6, 5**6),
    # 5 nodes * 4 decisions * 2 cells; per node two pointers and two 5-way ops.
    ("enas_micro", {}, 40, (_CELL5 * 25**5)**2),
    ("enas_micro", {"num_nodes": 2}, 16, (2 * 2 * 25 * 3 * 3 * 25)**2),
    # 12 ops + 0 + 1 + ... + 11 skip bits.
    ("enas_macro", {}, 78, 6**12 * 2**66),
    ("enas_macro", {"num_layers": 3}, 6, 6**3 * 2**3),
    # node0/act, then (prev, act) for nodes 1..11; prev of node i has i values.
    ("enas_rnn", {}, 23, 4**12 * math.factorial(11)),
    ("enas_rnn", {"num_nodes": 3}, 5, 4 * (1 * 4) * (2 * 4)),
    # 5 blocks * 5 decisions * 2 cells; 13 ops, 2 combiners.
    ("nasnet", {}, 50, (_CELL5 * 13**10 * 2**5)**2),
    ("nasnet", {"num_blocks": 2}, 20,
     (2 * 2 * 13 * 13 * 2 * 3 * 3 * 13 * 13 * 2)**2),
    # 6 layers * 4 hyperparameters + 15 skip bits.
    ("nasrl", {}, 39, (4 * 4 * 4 * 3)**6 * 2**15),
    # Block-QNN: per layer i, 11 type codes and two predecessors K < i.
    ("blockqnn", {"max_layers": 3}, 9, 11**3 * (1 * 2 * 3)**2),
    # Seed 003: two consecutive ops of 8; three nodes picking input and op.
    ("seed003_small", {}, 2, 8 * 8),
    ("seed003_large", {}, 6, (1 * 8) * (2 * 8) * (3 * 8)),
    ("seed003_large", {"num_nodes": 2}, 4, (1 * 8) * (2 * 8)),
    ("nasrl", {"search_strides": False}, 33, (4 * 4 * 4)**6 * 2**15),
    ("nasrl", {"num_layers": 2, "search_strides": False}, 7, 64 * 64 * 2),
    ("nasrl", {"num_layers": 3, "skip_connections": False}, 12, 192**3),
    # Tree nodes (combine, act), inject (combine, act), cell index (2 nodes).
    ("nasrl_rnn", {"base": 2}, 10, 8**3 * 8 * 3 * 3),
    ("nasrl_rnn", {"base": 4}, 18, 8**7 * 8 * 7 * 7),
]


def _case_id(case) -> str:
  name, kwargs = case[:2]
  return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


@pytest.fixture(scope="module", params=CASES, ids=[_case_id(c) for c in CASES])
def case(request):
  """(space, expected decision count, expected size, uniform samples)."""
  name, kwargs, num_decisions, num_archs = request.param
  space = registry.get(name, **kwargs)
  keys = jax.random.split(jax.random.key(0), NUM_SAMPLES)
  samples = jax.vmap(space.sample_uniform)(keys)
  return space, num_decisions, num_archs, samples


def _first(space: base.SearchSpace, kind: int) -> int | None:
  return next((t for t, d in enumerate(space.decisions) if d.kind == kind),
              None)


# -- registry -----------------------------------------------------------------


def test_registry_names_cover_every_family():
  assert set(registry.names()) == {"nasbench201", "enas_micro", "enas_macro",
                                   "enas_rnn", "nasnet", "nasrl",
                                   "seed003_small", "seed003_large",
                                   "nasrl_rnn", "blockqnn"}
  assert {c[0] for c in CASES} == set(registry.names())


def test_registry_unknown_name_lists_known_names():
  with pytest.raises(ValueError) as err:
    registry.get("darts")
  assert "'darts'" in str(err.value)
  for name in registry.names():
    assert name in str(err.value)


def test_registry_passes_kwargs():
  assert registry.get("enas_micro", num_nodes=3).num_decisions == 24
  assert registry.get("nasrl", num_layers=1).num_decisions == 4


@pytest.mark.parametrize("factory, kwargs", [
    (enas.micro_space, {"num_nodes": 0}),
    (enas.macro_space, {"num_layers": -1}),
    (enas.rnn_space, {"num_nodes": 1.5}),
    (nasnet.space, {"num_blocks": 0}),
    (nasrl.space, {"num_layers": 0}),
])
def test_factories_reject_bad_sizes(factory, kwargs):
  with pytest.raises(ValueError):
    factory(**kwargs)


# -- structure ----------------------------------------------------------------


def test_counts(case):
  space, num_decisions, num_archs, _ = case
  assert space.num_decisions == num_decisions
  assert len(space.num_choices) == num_decisions
  assert space.num_architectures == num_archs


def test_enas_micro_structure():
  space = enas.micro_space(num_nodes=5)
  assert space.init_anchors == (0, 1, 7, 8)
  assert space.num_anchors == 14
  names = [d.name for d in space.decisions]
  assert names[:5] == ["normal/node0/input_a", "normal/node0/input_b",
                       "normal/node0/op_a", "normal/node0/op_b",
                       "normal/node1/input_a"]
  by_name = {d.name: d for d in space.decisions}
  ptr = by_name["reduce/node3/input_b"]
  assert (ptr.kind, ptr.num_inputs, ptr.anchor_base) == (base.POINTER, 5, 7)
  op_b = by_name["reduce/node3/op_b"]
  assert (op_b.anchor, op_b.head, op_b.choices) == (12, "enas_micro_op",
                                                     enas.MICRO_OPS)
  assert by_name["normal/node4/op_b"].anchor == 6
  assert by_name["normal/node4/op_a"].anchor == -1
  assert len(enas.MICRO_OPS) == 5


def test_enas_macro_structure():
  space = enas.macro_space(num_layers=4)
  assert [d.name for d in space.decisions] == [
      "layer0/op", "layer1/op", "layer1/skip_from0", "layer2/op",
      "layer2/skip_from0", "layer2/skip_from1", "layer3/op",
      "layer3/skip_from0", "layer3/skip_from1", "layer3/skip_from2"]
  for d in space.decisions:
    if d.kind == base.SKIP:
      assert d.target == int(d.name[-1])
    else:
      assert d.anchor == int(d.name[5]) and d.head == "enas_macro_op"
      assert len(d.choices) == 6


def test_enas_rnn_structure():
  space = enas.rnn_space(num_nodes=12)
  d = space.decisions
  assert (d[0].name, d[0].anchor) == ("node0/act", 0)
  for i in range(1, 12):
    prev, act = d[2 * i - 1], d[2 * i]
    assert (prev.name, prev.kind, prev.num_inputs, prev.anchor_base) == (
        f"node{i}/prev", base.POINTER, i, 0)
    assert (act.name, act.anchor, act.head) == (f"node{i}/act", i,
                                                "enas_rnn_act")
  assert enas.RNN_ACTIVATIONS == ("tanh", "relu", "identity", "sigmoid")


def test_nasnet_structure():
  space = nasnet.space(num_blocks=5)
  assert len(nasnet.OPS) == 13 and len(set(nasnet.OPS)) == 13
  assert space.init_anchors == (0, 1, 7, 8)
  by_name = {d.name: d for d in space.decisions}
  assert [d.name for d in space.decisions[:5]] == [
      "normal/block0/input_a", "normal/block0/input_b", "normal/block0/op_a",
      "normal/block0/op_b", "normal/block0/combine"]
  assert by_name["normal/block2/combine"].anchor == 4
  assert by_name["reduce/block4/combine"].anchor == 13
  assert by_name["reduce/block4/input_a"].num_inputs == 6
  assert by_name["reduce/block4/input_a"].anchor_base == 7
  assert by_name["reduce/block1/op_a"].head == "nasnet_op"
  assert by_name["reduce/block1/combine"].choices == ("add", "concat")


def test_nasrl_structure():
  space = nasrl.space(num_layers=3)
  assert [d.name for d in space.decisions[4:11]] == [
      "layer1/filter_height", "layer1/filter_width", "layer1/num_filters",
      "layer1/stride", "layer1/skip_from0", "layer2/filter_height",
      "layer2/filter_width"]
  anchors = [d.anchor for d in space.decisions if d.anchor >= 0]
  assert anchors == [0, 1, 2]
  assert space.decisions[3].anchor == 0  # layer0/stride: the last op.
  # NAS-RL: one softmax per prediction.
  ops = [d for d in space.decisions if d.kind == base.OP]
  assert all(d.head == d.name for d in ops)
  no_strides = nasrl.space(num_layers=3, search_strides=False)
  assert no_strides.decisions[2].name == "layer0/num_filters"
  assert no_strides.decisions[2].anchor == 0
  labels = [int(c) for c in space.decisions[0].choices]
  assert tuple(labels) == nasrl.FILTER_SIZES
  assert nasrl.NUM_FILTERS == (24, 36, 48, 64) and nasrl.STRIDES == (1, 2, 3)


# -- sampling and codecs ------------------------------------------------------


def test_samples_are_valid(case):
  space, num_decisions, _, samples = case
  assert samples.dtype == jnp.int32
  assert samples.shape == (NUM_SAMPLES, num_decisions)
  assert bool(jnp.all(jax.jit(space.is_valid)(samples)))


def test_text_round_trip(case):
  space, _, _, samples = case
  for arch in np.asarray(samples):
    text = space.to_text(arch)
    assert "\n" not in text
    back = space.from_text(text)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, arch)


def test_spec_round_trip(case):
  space, _, _, samples = case
  for arch in np.asarray(samples):
    spec = json.loads(json.dumps(space.to_spec(arch)))
    np.testing.assert_array_equal(space.from_spec(spec), arch)


def test_uniform_sampling_covers_every_choice(case):
  space, _, _, samples = case
  samples = np.asarray(samples)
  for t, d in enumerate(space.decisions):
    # With at most 13 choices, a choice is missed by 1000 uniform samples
    # with probability below (12/13)**1000 ~ 1e-35.
    assert d.num_choices <= 13
    assert set(np.unique(samples[:, t])) == set(range(d.num_choices)), d.name


def test_nasbench201_sampling_is_uniform():
  space = nasbench201.space()
  keys = jax.random.split(jax.random.key(1), NUM_SAMPLES)
  samples = np.asarray(jax.vmap(space.sample_uniform)(keys))
  for t in range(space.num_decisions):
    freq = np.bincount(samples[:, t], minlength=5) / NUM_SAMPLES
    np.testing.assert_allclose(freq, 0.2, atol=0.05)


def test_nasbench201_text_form():
  space = nasbench201.space()
  text = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
          "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
  arch = space.from_text(text)
  np.testing.assert_array_equal(arch, [3, 3, 4, 1, 3, 1])
  assert space.to_text(arch) == text


# -- invalid codes ------------------------------------------------------------


def _assert_rejected(space: base.SearchSpace, arch: np.ndarray, t: int):
  """Both validate and the codecs reject ``arch``, naming decision ``t``."""
  d = space.decisions[t]
  for fn in (space.validate, space.to_text, space.to_spec):
    with pytest.raises(InvalidArchitectureError) as err:
      fn(arch)
    msg = str(err.value)
    assert d.name in msg
    assert f"0..{d.num_choices - 1}" in msg or "0 or 1" in msg
  assert not bool(jax.jit(space.is_valid)(jnp.asarray(arch)))


def _bad_values(space: base.SearchSpace) -> list[tuple[np.ndarray, int]]:
  """(arch, offending decision) for every kind of out-of-range value."""
  zeros = np.zeros(space.num_decisions, np.int32)
  bad = []
  t = _first(space, base.OP)
  bad.append((zeros.copy(), t, space.decisions[t].num_choices))  # Too large.
  bad.append((zeros.copy(), space.num_decisions - 1, -1))  # Negative.
  for kind, value in ((base.POINTER, None), (base.SKIP, 2)):
    t = _first(space, kind)
    if t is not None:
      bad.append((zeros.copy(), t, value or space.decisions[t].num_inputs))
  out = []
  for arch, t, value in bad:
    arch[t] = value
    out.append((arch, t))
  return out


def test_out_of_range_values_are_rejected(case):
  space = case[0]
  assert bool(space.is_valid(jnp.zeros(space.num_decisions, jnp.int32)))
  bad = _bad_values(space)
  assert len(bad) >= 2
  for arch, t in bad:
    _assert_rejected(space, arch, t)
  batch = jnp.asarray(np.stack([a for a, _ in bad]))
  assert not bool(jnp.any(jax.jit(space.is_valid)(batch)))


def test_enas_micro_pointer_range_is_named():
  space = enas.micro_space()
  t = [d.name for d in space.decisions].index("normal/node0/input_a")
  arch = np.zeros(space.num_decisions, np.int32)
  arch[t] = 2  # Node 0 only sees the two cell inputs.
  with pytest.raises(InvalidArchitectureError) as err:
    space.validate(arch)
  assert "normal/node0/input_a" in str(err.value)
  assert "0..1" in str(err.value)
  assert not bool(jax.jit(space.is_valid)(jnp.asarray(arch)))
  # Node 2 of the reduction cell sees 4 anchors: 3 is fine, 4 is not.
  t = [d.name for d in space.decisions].index("reduce/node2/input_b")
  arch[:] = 0
  arch[t] = 3
  space.validate(arch)
  arch[t] = 4
  _assert_rejected(space, arch, t)


def test_malformed_arrays_are_rejected(case):
  space = case[0]
  n = space.num_decisions
  malformed = {
      "short": np.zeros(n - 1, np.int32),
      "long": np.zeros(n + 1, np.int32),
      "2-D": np.zeros((1, n), np.int32),
      "scalar": np.int32(0),
      "fractional": np.full(n, 0.5, np.float32),
  }
  for what, arch in malformed.items():
    for fn in (space.validate, space.to_text, space.to_spec):
      with pytest.raises(InvalidArchitectureError, match=space.name):
        fn(arch)
  # Integer-valued floats are accepted and normalized to int32.
  assert space.validate(np.zeros(n, np.float32)).dtype == np.int32


def test_unparsable_text_is_rejected(case):
  space = case[0]
  for text in ("", "garbage", "0,1,x", ",".join(["0"] * (space.num_decisions
                                                         + 1))):
    with pytest.raises(InvalidArchitectureError):
      space.from_text(text)


def test_default_text_rejects_out_of_range_values():
  space = enas.rnn_space(num_nodes=3)
  space.from_text("0,0,0,1,3")
  with pytest.raises(InvalidArchitectureError, match="node2/prev.*0..1"):
    space.from_text("0,0,0,2,3")


@pytest.mark.parametrize("text, fragment", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|conv_7x7~1|+"
     "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "conv_7x7"),
    ("|nor_conv_3x3~1|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
     "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "node 0"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "2 nodes"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+"
     "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "1 inputs"),
    ("nor_conv_3x3~0+|nor_conv_3x3~0|avg_pool_3x3~1|+"
     "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "cannot parse"),
])
def test_nasbench201_bad_text(text, fragment):
  with pytest.raises(InvalidArchitectureError, match=fragment):
    nasbench201.space().from_text(text)


def test_bad_specs_are_rejected(case):
  space = case[0]
  spec = space.to_spec(np.zeros(space.num_decisions, np.int32))
  names = [d.name for d in space.decisions]

  missing = json.loads(json.dumps(spec))
  del missing["choices"][names[-1]]
  with pytest.raises(InvalidArchitectureError, match="missing") as err:
    space.from_spec(missing)
  assert names[-1] in str(err.value)

  extra = json.loads(json.dumps(spec))
  extra["choices"]["no/such/decision"] = 0
  with pytest.raises(InvalidArchitectureError, match="no/such/decision"):
    space.from_spec(extra)

  op = names[_first(space, base.OP)]
  unknown = json.loads(json.dumps(spec))
  unknown["choices"][op] = "no_such_op"
  with pytest.raises(InvalidArchitectureError, match="no_such_op") as err:
    space.from_spec(unknown)
  assert op in str(err.value)

  for kind in (base.POINTER, base.SKIP):
    t = _first(space, kind)
    if t is None:
      continue
    for label in ("x", 1.5, space.decisions[t].num_choices, -1):
      bad = json.loads(json.dumps(spec))
      bad["choices"][names[t]] = label
      with pytest.raises(InvalidArchitectureError) as err:
        space.from_spec(bad)
      assert names[t] in str(err.value)

  wrong_space = dict(spec, space="not_" + space.name)
  with pytest.raises(InvalidArchitectureError, match="not_" + space.name):
    space.from_spec(wrong_space)

  for not_a_spec in ([], {"space": space.name}):
    with pytest.raises(InvalidArchitectureError):
      space.from_spec(not_a_spec)


# -- indexing -----------------------------------------------------------------


def test_nasbench201_index_round_trip():
  space = nasbench201.space()
  n = space.num_architectures
  assert n == 15625
  codes = np.stack([space.from_index(i) for i in range(n)])
  assert codes.dtype == np.int32
  assert len({tuple(c) for c in codes}) == n
  assert bool(jnp.all(space.is_valid(jnp.asarray(codes))))
  index = jax.jit(space.index)
  np.testing.assert_array_equal(index(jnp.asarray(codes)), np.arange(n))
  # A 2-D grid of codes through nested vmaps.
  grid = jnp.asarray(codes.reshape(125, 125, 6))
  np.testing.assert_array_equal(
      jax.vmap(jax.vmap(space.index))(grid), np.arange(n).reshape(125, 125))
  for bad in (-1, n):
    with pytest.raises(InvalidArchitectureError):
      space.from_index(bad)


@pytest.mark.parametrize("name, kwargs", [
    ("enas_rnn", {"num_nodes": 3}),
    ("enas_macro", {"num_layers": 3}),
    ("nasrl", {"num_layers": 2, "search_strides": False}),
])
def test_small_space_index_round_trip(name, kwargs):
  space = registry.get(name, **kwargs)
  n = space.num_architectures
  codes = np.stack([space.from_index(i) for i in range(n)])
  assert len({tuple(c) for c in codes}) == n
  np.testing.assert_array_equal(space.index(jnp.asarray(codes)), np.arange(n))


def test_index_refuses_huge_spaces():
  space = enas.micro_space()
  with pytest.raises(ValueError, match="int32"):
    space.index(jnp.zeros(space.num_decisions, jnp.int32))
