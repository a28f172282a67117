"""Seeded fuzz of architecture inputs (issue 7, item 8): every public entry
point of every space rejects wrong types, wrapped integers, bools and
out-of-range values with InvalidArchitectureError, and reports the value
given."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.spaces import registry
from nas_jax.spaces.base import InvalidArchitectureError

CASES_PER_SPACE = 1200


def _invalid_codes(space, rng):
  """Yields (description, code) pairs that are never valid."""
  nc = space.num_choices
  T = space.num_decisions
  kinds = ["high", "negative", "wrap32", "uint64", "bool", "complex", "float",
           "nan", "length", "text_item", "none_item", "nested", "scalar"]
  for i in range(CASES_PER_SPACE):
    kind = kinds[i % len(kinds)]
    base = np.array([rng.integers(0, c) for c in nc], np.int64)
    t = int(rng.integers(0, T))
    if kind == "high":
      base[t] = nc[t] + int(rng.integers(0, 1000))
      yield kind, base
    elif kind == "negative":
      base[t] = -int(rng.integers(1, 2**40))
      yield kind, base.tolist()
    elif kind == "wrap32":  # int32(2**32 + v) == v: must not alias v
      base[t] = 2**32 + base[t]
      yield kind, base
    elif kind == "uint64":
      u = base.astype(np.uint64)
      u[t] = np.uint64(2**64 - 1 - int(rng.integers(0, 5)))
      yield kind, u
    elif kind == "bool":
      lst = base.tolist()
      lst[t] = bool(rng.integers(0, 2))
      yield kind, lst
    elif kind == "complex":
      yield kind, base.astype(np.complex64) + 1j * rng.integers(0, 2)
    elif kind == "float":
      f = base.astype(np.float64)
      f[t] += rng.uniform(0.01, 0.99)
      yield kind, f
    elif kind == "nan":
      f = base.astype(np.float32)
      f[t] = [np.nan, np.inf, -np.inf][i % 3]
      yield kind, f
    elif kind == "length":
      n = int(rng.integers(0, 2 * T + 2))
      n = n + 1 if n == T else n
      yield kind, rng.integers(0, 2, n)
    elif kind == "text_item":
      lst = base.tolist()
      lst[t] = str(lst[t])
      yield kind, lst
    elif kind == "none_item":
      lst = base.tolist()
      lst[t] = None
      yield kind, lst
    elif kind == "nested":
      yield kind, [base.tolist()] * int(rng.integers(2, 4))
    else:
      yield kind, [None, 0, 1.5, "0", b"0", {"a": 1}, True][i % 7]


@pytest.mark.parametrize("name", registry.names())
def test_fuzz_validate_and_codecs_reject_invalid_codes(name):
  space = registry.get(name)
  rng = np.random.default_rng(sum(map(ord, name)))
  n = 0
  for kind, code in _invalid_codes(space, rng):
    for fn in (space.validate, space.to_text, space.to_spec):
      with pytest.raises(InvalidArchitectureError):
        fn(code)
      n += 1
    # The jittable check agrees (for array-like codes of the right rank).
    try:
      arr = np.asarray(code)
    except (ValueError, TypeError):
      arr = None
    if arr is not None and arr.ndim == 1 and arr.dtype != object:
      assert not bool(space.is_valid(code)), (kind, code)
  assert n >= 3 * CASES_PER_SPACE


@pytest.mark.parametrize("name", registry.names())
def test_fuzz_text_spec_and_index_inputs(name):
  space = registry.get(name)
  rng = np.random.default_rng(sum(map(ord, name)) + 1)
  key = jax.random.key(0)
  archs = np.asarray(jax.vmap(space.sample_uniform)(jax.random.split(key, 8)))
  texts = [space.to_text(a) for a in archs]
  specs = [space.to_spec(a) for a in archs]
  rejected = 0
  junk = [None, 0, 1.5, b"bytes", ["x"], {"x": 1}, np.array([1, 2]), True]
  for i in range(CASES_PER_SPACE):
    # from_text: wrong types, and mutated lines (a mutation may happen to
    # stay valid; then it must round-trip).
    j = junk[i % len(junk)]
    with pytest.raises(InvalidArchitectureError):
      space.from_text(j)
    rejected += 1
    t = texts[i % len(texts)]
    pos = int(rng.integers(0, len(t)))
    mutated = [t[:pos] + t[pos + 1:], t[:pos] + "#" + t[pos:],
               t + ",", t[:pos] + chr(int(rng.integers(33, 127))) + t[pos + 1:]
               ][i % 4]
    try:
      parsed = space.from_text(mutated)
      assert space.from_text(space.to_text(parsed)).tolist() == \
          parsed.tolist()
    except InvalidArchitectureError:
      rejected += 1
    # from_spec: non-mappings, non-mapping choices, array / int / unknown
    # labels, missing decisions.
    spec = {"space": space.name, "choices": dict(specs[i % len(specs)][
        "choices"])}
    d = space.decisions[int(rng.integers(0, space.num_decisions))]
    bad_spec = [
        j, {"choices": [1, 2]}, {"choices": "text"},
        {**spec, "choices": {**spec["choices"],
                             d.name: np.array([spec["choices"][d.name]])}},
        {**spec, "choices": {**spec["choices"], d.name: 10**6}},
        {**spec, "choices": {**spec["choices"], d.name: True}},
        {**spec, "choices": {k: v for k, v in spec["choices"].items()
                             if k != d.name}},
        {**spec, "space": "another"},
    ][i % 8]
    with pytest.raises(InvalidArchitectureError):
      space.from_spec(bad_spec)
    rejected += 1
    # from_index: non-integers and out-of-range integers.
    bad_index = [1.5, True, "3", None, -1 - int(rng.integers(0, 10**6)),
                 space.num_architectures + int(rng.integers(0, 10**6)),
                 np.float32(2.0), [1]][i % 8]
    with pytest.raises(InvalidArchitectureError):
      space.from_index(bad_index)
    rejected += 1
  assert rejected >= 3 * CASES_PER_SPACE


@pytest.mark.parametrize("name", [n for n in registry.names()
                                  if registry.get(n).num_architectures < 2**31])
def test_index_validates_and_never_aliases(name):
  space = registry.get(name)
  nc = space.num_choices
  rng = np.random.default_rng(7)
  for _ in range(200):
    code = np.array([rng.integers(0, c) for c in nc])
    t = int(rng.integers(0, len(nc)))
    code[t] = nc[t] + int(rng.integers(0, 3))
    with pytest.raises(InvalidArchitectureError, match=str(code[t])):
      space.index(code)
  # Inside jit an invalid code cannot raise; it maps to -1, never to the
  # index of a valid architecture.
  good = np.array([c - 1 for c in nc])
  bad = good.copy()
  bad[-1] = nc[-1]
  idx = jax.jit(space.index)(jnp.asarray(np.stack([good, bad]), jnp.int32))
  assert idx.tolist() == [space.num_architectures - 1, -1]
  assert space.from_index(int(idx[0])).tolist() == good.tolist()


def test_reported_value_is_the_value_given():
  space = registry.get("seed003_small")
  with pytest.raises(InvalidArchitectureError, match="18446744073709551615"):
    space.validate(np.array([2**64 - 1, 0], np.uint64))
  with pytest.raises(InvalidArchitectureError, match="4294967296"):
    space.validate(np.array([2**32, 0], np.int64))
