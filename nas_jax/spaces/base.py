"""Search spaces as data (DESIGN.md, abstraction 1).

A search space is an ordered list of :class:`Decision` s. An architecture is an
``int32`` vector with one choice index per decision, so it can be vmapped,
sharded, hashed and logged as one line of text.

Three kinds of decision cover every space in the seeds:

* ``OP``: pick one of a fixed vocabulary (an op, a filter size, an activation).
* ``POINTER``: pick one of ``num_inputs`` earlier *anchors* (ENAS / NASNet "pick
  one of the previous nodes"; the ENAS RNN "previous index").
* ``SKIP``: a yes/no bit connecting one earlier anchor (NAS-RL skip connections,
  Zoph & Le 2017 Sec. 3.3; ENAS macro skip bits).

Anchors are slots that hold the controller's hidden state at the decision that
creates a node, so that input-picking decisions can attend over them. Slots in
``init_anchors`` (e.g. the two cell inputs) are filled with learned vectors.

Every constraint of these spaces is a per-decision range ``0 <= a_t <
num_choices_t``: conditional structure is expressed by the ranges of pointer
decisions, never by rejection, so uniform sampling and validation are both
simple and jittable.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

OP, POINTER, SKIP = 0, 1, 2
_KIND_NAMES = {OP: "op", POINTER: "pointer", SKIP: "skip"}


class InvalidArchitectureError(ValueError):
  """An architecture code (array, text line or spec) does not fit its space."""


@dataclasses.dataclass(frozen=True)
class Decision:
  """One decision of a search space.

  Attributes:
    name: unique, readable name, e.g. ``"normal/node2/op_a"``.
    kind: ``OP``, ``POINTER`` or ``SKIP``.
    choices: for ``OP``, the labels of the choices.
    group: for ``OP``, decisions of one group share the controller's softmax
      head and embedding (ENAS shares them per decision type); defaults to the
      decision's own name (NAS-RL: a softmax per decision).
    num_inputs: for ``POINTER``, how many anchors may be picked.
    anchor_base: for ``POINTER``, the slot of candidate 0; candidate ``j`` is
      slot ``anchor_base + j``.
    target: for ``SKIP``, the slot the bit connects to.
    anchor: the slot this decision's hidden state is written to, or -1.
  """

  name: str
  kind: int = OP
  choices: tuple[str, ...] = ()
  group: str | None = None
  num_inputs: int = 0
  anchor_base: int = 0
  target: int = -1
  anchor: int = -1

  @property
  def num_choices(self) -> int:
    if self.kind == OP:
      return len(self.choices)
    if self.kind == POINTER:
      return self.num_inputs
    return 2

  @property
  def head(self) -> str:
    return self.group if self.group is not None else self.name

  def label(self, value: int) -> str | int:
    """The readable label of choice ``value`` (op name, or the integer)."""
    return self.choices[value] if self.kind == OP else int(value)

  def value(self, label: Any) -> int:
    """Inverse of :meth:`label`; raises a clear error for unknown labels."""
    if self.kind == OP:
      if isinstance(label, str) and label in self.choices:
        return self.choices.index(label)
      raise InvalidArchitectureError(
          f"decision {self.name!r}: unknown choice {label!r}; allowed: "
          f"{', '.join(self.choices)}")
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
      raise InvalidArchitectureError(
          f"decision {self.name!r}: expected an integer in "
          f"0..{self.num_choices - 1}, got {label!r}")
    if not 0 <= label < self.num_choices:
      raise InvalidArchitectureError(
          f"decision {self.name!r}: {label} is out of range 0.."
          f"{self.num_choices - 1}")
    return int(label)

  def describe_range(self) -> str:
    if self.kind == OP:
      return (f"0..{self.num_choices - 1} ({self.num_choices} choices: "
              f"{', '.join(self.choices)})")
    if self.kind == POINTER:
      return f"0..{self.num_choices - 1} (one of {self.num_choices} inputs)"
    return "0 or 1 (skip connection off/on)"


class SearchSpace:
  """An ordered list of decisions plus the anchor slots they use.

  Subclasses override :meth:`to_text` / :meth:`from_text` (and optionally
  :meth:`to_spec` / :meth:`from_spec`) for a family's own notation; the
  defaults work for every space.
  """

  def __init_subclass__(cls, **kwargs):
    # Every family's own parser gets the same input checks (see _hardened).
    super().__init_subclass__(**kwargs)
    for name in ("from_text", "from_spec"):
      fn = cls.__dict__.get(name)
      if fn is not None and not getattr(fn, "_hardened", False):
        setattr(cls, name, _hardened(fn, name))

  def __init__(self, name: str, decisions: Sequence[Decision],
               init_anchors: Sequence[int] = ()):
    self.name = name
    self.decisions = tuple(decisions)
    self.init_anchors = tuple(init_anchors)
    self._check_structure()

  # -- structure ------------------------------------------------------------

  def _check_structure(self):
    names = [d.name for d in self.decisions]
    if len(set(names)) != len(names):
      dup = sorted({n for n in names if names.count(n) > 1})
      raise ValueError(f"space {self.name!r}: duplicate decision names {dup}")
    if not self.decisions:
      raise ValueError(f"space {self.name!r} has no decisions")
    written = set(self.init_anchors)
    groups: dict[str, tuple[str, ...]] = {}
    for d in self.decisions:
      if d.num_choices < 1:
        raise ValueError(f"decision {d.name!r} has no choices")
      if d.kind == POINTER:
        needed = set(range(d.anchor_base, d.anchor_base + d.num_inputs))
        if not needed <= written:
          raise ValueError(
              f"decision {d.name!r} points at anchor slots "
              f"{sorted(needed - written)} that no earlier decision writes")
      elif d.kind == SKIP and d.target not in written:
        raise ValueError(
            f"decision {d.name!r} connects anchor {d.target}, which no "
            f"earlier decision writes")
      elif d.kind == OP:
        if groups.setdefault(d.head, d.choices) != d.choices:
          raise ValueError(
              f"decision {d.name!r}: group {d.head!r} is used with different "
              f"choice lists")
      if d.anchor >= 0:
        written.add(d.anchor)

  @property
  def num_decisions(self) -> int:
    return len(self.decisions)

  @functools.cached_property
  def num_choices(self) -> np.ndarray:
    """``int32[T]``: the number of allowed choices of each decision."""
    return np.array([d.num_choices for d in self.decisions], np.int32)

  @functools.cached_property
  def num_anchors(self) -> int:
    slots = [d.anchor for d in self.decisions] + list(self.init_anchors)
    return max(slots) + 1 if max(slots, default=-1) >= 0 else 0

  @property
  def num_architectures(self) -> int:
    return math.prod(int(c) for c in self.num_choices)

  def __repr__(self) -> str:
    return (f"{type(self).__name__}({self.name!r}, decisions="
            f"{self.num_decisions}, architectures={self.num_architectures:.3g})")

  # -- validation -----------------------------------------------------------

  def validate(self, arch: Any) -> np.ndarray:
    """Returns ``arch`` as ``int32[T]`` or raises InvalidArchitectureError.

    Accepted: a sequence or array of integers (or of integral floats). Not
    accepted: text, mappings, bools, complex numbers, integers that do not
    fit the decision's range (compared exactly, so a uint64 or int64 that
    would wrap in int32 is out of range, and reported as given). The error
    names the first offending decision and its allowed range.
    """
    if arch is None or isinstance(arch, (str, bytes, bytearray, Mapping)):
      raise InvalidArchitectureError(
          f"space {self.name!r} expects an int vector of length "
          f"{self.num_decisions}, got {type(arch).__name__} {arch!r:.80}")
    if isinstance(arch, (list, tuple)) and any(
        isinstance(v, (bool, np.bool_)) for v in arch):
      raise InvalidArchitectureError(
          f"space {self.name!r}: architecture codes are integers, got a bool "
          f"in {list(arch)!r:.80}")
    try:
      a = np.asarray(arch)
    except (ValueError, TypeError) as e:
      raise InvalidArchitectureError(
          f"space {self.name!r}: cannot read {arch!r:.80} as an array: "
          f"{e}") from None
    if a.ndim != 1 or a.shape[0] != self.num_decisions:
      raise InvalidArchitectureError(
          f"space {self.name!r} expects an int vector of length "
          f"{self.num_decisions}, got shape {a.shape}")
    values = _exact_ints(a)
    if values is None:
      raise InvalidArchitectureError(
          f"space {self.name!r}: architecture codes are integers, got dtype "
          f"{a.dtype} values {a.tolist()!r:.80}")
    for t, (v, d) in enumerate(zip(values, self.decisions)):
      if not 0 <= v < d.num_choices:
        raise InvalidArchitectureError(
            f"space {self.name!r}, decision {t} {d.name!r} "
            f"({_KIND_NAMES[d.kind]}): value {v} is out of range; "
            f"allowed {d.describe_range()}")
    return np.asarray(values, np.int32)

  def is_valid(self, arch: jax.Array) -> jax.Array:
    """Jittable validity check of codes shaped ``[..., T]``; ``bool[...]``.

    A wrong trailing length is known at trace time and gives ``False``, as
    do bool and complex codes; non-integer float codes are invalid too. A
    concrete (non-traced) array is checked exactly in its own dtype, so
    int64 / uint64 values that would wrap in int32 are invalid.
    """
    if isinstance(arch, (list, tuple)) and any(
        isinstance(v, (bool, np.bool_)) for v in arch):
      return jnp.zeros((), bool)  # [True, 0] is not a code
    try:
      host = np.asarray(arch)
    except (jax.errors.TracerArrayConversionError,
            jax.errors.ConcretizationTypeError):
      host = None
    except (ValueError, TypeError):  # ragged or otherwise unreadable
      return jnp.zeros((), bool)
    if host is not None:
      shape = host.shape[:-1] if host.ndim else ()
      if host.ndim == 0 or host.shape[-1] != self.num_decisions:
        return jnp.zeros(shape, bool)
      if host.dtype == bool or not (np.issubdtype(host.dtype, np.integer) or
                                    np.issubdtype(host.dtype, np.floating)):
        return jnp.zeros(shape, bool)
      nc = self.num_choices
      if np.issubdtype(host.dtype, np.unsignedinteger):
        ok = host < nc.astype(host.dtype)
      elif np.issubdtype(host.dtype, np.integer):
        ok = (host >= 0) & (host.astype(np.int64) < nc)
      else:
        with np.errstate(invalid="ignore"):
          ok = (np.isfinite(host) & (np.floor(host) == host) & (host >= 0) &
                (host < nc))
      return jnp.asarray(np.all(ok, axis=-1))
    arch = jnp.asarray(arch)
    if arch.ndim == 0 or arch.shape[-1] != self.num_decisions:
      return jnp.zeros(arch.shape[:-1] if arch.ndim else (), bool)
    if arch.dtype == bool or jnp.issubdtype(arch.dtype, jnp.complexfloating):
      return jnp.zeros(arch.shape[:-1], bool)
    nc = jnp.asarray(self.num_choices)
    ok = (arch >= 0) & (arch < nc)
    if jnp.issubdtype(arch.dtype, jnp.floating):
      ok &= jnp.floor(arch) == arch
    return jnp.all(ok, axis=-1)

  # -- sampling and indexing ------------------------------------------------

  def sample_uniform(self, key: jax.Array) -> jax.Array:
    """A uniformly random architecture, ``int32[T]`` (jittable, vmappable)."""
    u = jax.random.uniform(key, (self.num_decisions,))
    nc = jnp.asarray(self.num_choices)
    return jnp.minimum((u * nc).astype(jnp.int32), nc - 1)

  def index(self, arch: jax.Array) -> jax.Array:
    """Mixed-radix index in ``[0, num_architectures)`` (jittable).

    The FIRST decision is the most significant digit (row-major, like
    ``np.ravel_multi_index(arch, num_choices)``): with 3 choices per
    decision, ``[0, 0, 1]`` is index 1 and ``[1, 0, 0]`` is index 9. A reward
    table is a vector in this order; ``nas_jax.evaluators.table`` builds one
    from ``{architecture: value}`` so the order is never guessed.

    Only for spaces small enough for int32 (NAS-Bench-201, the 64-child
    space): table lookups gather with it. Concrete codes are validated
    (``InvalidArchitectureError`` for any invalid row, so ``[0, 9]`` can
    never alias ``[1, 1]``); traced codes that are invalid give -1.
    """
    if self.num_architectures >= 2**31:
      raise ValueError(
          f"space {self.name!r} has {self.num_architectures:.3g} "
          "architectures: too many for an int32 index")
    try:
      host = np.asarray(arch)
    except (jax.errors.TracerArrayConversionError,
            jax.errors.ConcretizationTypeError):
      host = None
    if host is not None:
      rows = host.reshape(-1, host.shape[-1]) if host.ndim >= 1 else host
      if host.ndim == 0 or host.shape[-1] != self.num_decisions:
        self.validate(host)  # raises, naming the shape
      if not bool(self.is_valid(host).all()):
        for row in rows:
          self.validate(row)  # raises, naming the decision and value
    radix = np.cumprod(np.concatenate([[1], self.num_choices[::-1][:-1]]))
    radix = radix[::-1].astype(np.int32)
    if host is not None:  # on the host: no device dispatch per call
      return jnp.asarray(np.sum(host.astype(np.int64) * radix, axis=-1)
                         .astype(np.int32))
    arch = jnp.asarray(arch)
    idx = jnp.sum(arch.astype(jnp.int32) * jnp.asarray(radix), axis=-1)
    return jnp.where(self.is_valid(arch), idx, -1)

  def from_index(self, index: int) -> np.ndarray:
    if isinstance(index, (bool, np.bool_)) or not isinstance(
        index, (int, np.integer)):
      if isinstance(index, np.ndarray) and index.ndim == 0 and (
          np.issubdtype(index.dtype, np.integer)):
        index = int(index)
      else:
        raise InvalidArchitectureError(
            f"space {self.name!r}: an index is an integer, got "
            f"{type(index).__name__} {index!r:.80}")
    index = int(index)
    if not 0 <= index < self.num_architectures:
      raise InvalidArchitectureError(
          f"index {index} out of range 0..{self.num_architectures - 1}")
    out = []
    for c in self.num_choices[::-1]:
      index, r = divmod(index, int(c))
      out.append(r)
    return np.array(out[::-1], np.int32)

  # -- codecs ---------------------------------------------------------------

  def to_text(self, arch: Any) -> str:
    """One line of text: the choice indices joined by commas."""
    return ",".join(str(int(v)) for v in self.validate(arch))

  def from_text(self, text: str) -> np.ndarray:
    """Inverse of :meth:`to_text`: comma-separated choice indices."""
    example = ",".join(["0"] * min(self.num_decisions, 8)) + (
        ",..." if self.num_decisions > 8 else "")
    expected = (f"expected {self.num_decisions} comma-separated integers, "
                f"e.g. {example!r}")
    parts = text.strip().split(",")
    try:
      values = [int(p) for p in parts]
    except ValueError:
      raise InvalidArchitectureError(
          f"space {self.name!r}: cannot parse {text!r}; {expected}") from None
    if len(values) != self.num_decisions:
      hint = (f" (to read {text!r} as one digit per decision, use "
              f"{','.join(text.strip())!r})"
              if len(text.strip()) == self.num_decisions else "")
      raise InvalidArchitectureError(
          f"space {self.name!r}: {text!r} has {len(values)} comma-separated "
          f"values; {expected}{hint}")
    return self.validate(values)

  def to_spec(self, arch: Any) -> dict:
    """A JSON-able readable spec: ``{"space": ..., "choices": {name: label}}``."""
    a = self.validate(arch)
    return {"space": self.name,
            "choices": {d.name: d.label(int(v))
                        for d, v in zip(self.decisions, a)}}

  def from_spec(self, spec: Mapping) -> np.ndarray:
    if not isinstance(spec, Mapping) or "choices" not in spec:
      raise InvalidArchitectureError(
          f"space {self.name!r}: a spec is a mapping with key 'choices'")
    if not isinstance(spec["choices"], Mapping):
      raise InvalidArchitectureError(
          f"space {self.name!r}: a spec's 'choices' maps decision names to "
          f"labels, got {type(spec['choices']).__name__}")
    if spec.get("space", self.name) != self.name:
      raise InvalidArchitectureError(
          f"spec is for space {spec.get('space')!r}, not {self.name!r}")
    choices = spec["choices"]
    missing = [d.name for d in self.decisions if d.name not in choices]
    extra = sorted(set(choices) - {d.name for d in self.decisions})
    if missing or extra:
      raise InvalidArchitectureError(
          f"space {self.name!r}: spec is missing decisions {missing[:5]}"
          f"{'...' if len(missing) > 5 else ''} / has unknown ones {extra[:5]}")
    return self.validate([d.value(choices[d.name]) for d in self.decisions])

  def to_json(self, arch: Any) -> str:
    return json.dumps(self.to_spec(arch), sort_keys=False)

  def describe(self, arch: Any) -> list[tuple[str, str | int]]:
    a = self.validate(arch)
    return [(d.name, d.label(int(v))) for d, v in zip(self.decisions, a)]


def _exact_ints(a: np.ndarray) -> list[int] | None:
  """The values of a 1-D array as exact Python ints, or None if they are
  not integers (bools, complex, text, non-integral or non-finite floats)."""
  if a.dtype == bool or np.issubdtype(a.dtype, np.complexfloating):
    return None
  if np.issubdtype(a.dtype, np.integer):
    return [int(v) for v in a.tolist()]
  if np.issubdtype(a.dtype, np.floating):
    if not np.all(np.isfinite(a)) or not np.all(np.mod(a, 1) == 0):
      return None
    return [int(v) for v in a.tolist()]
  if a.dtype == object:
    out = []
    for v in a.tolist():
      if isinstance(v, (bool, np.bool_)) or not isinstance(
          v, (int, np.integer)):
        return None
      out.append(int(v))
    return out
  return None


def _hardened(fn, name: str):
  """Wraps a parser so wrong input types are InvalidArchitectureError."""

  @functools.wraps(fn)
  def parse(self, value, *args, **kwargs):
    if name == "from_text" and not isinstance(value, str):
      raise InvalidArchitectureError(
          f"space {self.name!r}: from_text expects a str, got "
          f"{type(value).__name__} {value!r:.80}")
    try:
      return fn(self, value, *args, **kwargs)
    except InvalidArchitectureError:
      raise
    except (TypeError, ValueError, AttributeError, KeyError,
            IndexError) as e:
      raise InvalidArchitectureError(
          f"space {self.name!r}: cannot read {value!r:.80} ({name}): "
          f"{e}") from None

  parse._hardened = True
  return parse


SearchSpace.from_text = _hardened(SearchSpace.from_text, "from_text")
SearchSpace.from_spec = _hardened(SearchSpace.from_spec, "from_spec")
