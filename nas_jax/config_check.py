"""Typed, ranged config fields: every value is checked before a run starts.

A run kind declares a *schema*, ``{dotted field name: rule}``, and its
``check_config(config)`` calls :func:`check`. Errors name the full dotted
field and the allowed range, e.g. ``ppo.learning_rate must be a finite
number > 0, got nan``, so a bad ``--config.x=...`` override fails in the
first second, before data is loaded, anything compiles or anything is
written. The same rules document the fields: :func:`describe` lists a
config's fields with their values, ranges and meanings (``experiments/main.py
--config=... --config_fields``).

This module imports neither JAX nor any data library, so checking is cheap.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

_INT_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Rule:
  """Base: what a field holds, in words (``doc``)."""

  _: dataclasses.KW_ONLY
  doc: str = ""
  optional: bool = False  # None is allowed

  def allowed(self) -> str:
    raise NotImplementedError

  def problem(self, value: Any) -> str | None:
    """None if ``value`` is allowed, else why not (without the name)."""
    raise NotImplementedError

  def check(self, name: str, value: Any) -> None:
    if value is None and self.optional:
      return
    why = self.problem(value)
    if why is not None:
      raise ValueError(f"{name} must be {self.allowed()}"
                       f"{' or None' if self.optional else ''}, got "
                       f"{value!r}{why}")


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class Int(Rule):
  lo: int = 0
  hi: int = _INT_MAX

  def allowed(self) -> str:
    if self.hi >= _INT_MAX:
      return f"an integer >= {self.lo}"
    return f"an integer in {self.lo}..{self.hi}"

  def problem(self, value):
    if not _is_int(value):
      return f" (a {type(value).__name__})"
    return None if self.lo <= value <= self.hi else ""


@dataclasses.dataclass(frozen=True)
class Float(Rule):
  """A finite real number in a range; ``gt`` / ``lt`` make a bound open."""

  ge: float | None = None
  gt: float | None = None
  le: float | None = None
  lt: float | None = None

  def allowed(self) -> str:
    parts = []
    for op, b in ((">=", self.ge), (">", self.gt), ("<=", self.le),
                  ("<", self.lt)):
      if b is not None:
        parts.append(f"{op} {b:g}")
    return "a finite number" + (" " + " and ".join(parts) if parts else "")

  def problem(self, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      return f" (a {type(value).__name__})"
    if not math.isfinite(value):
      return ""
    ok = ((self.ge is None or value >= self.ge) and
          (self.gt is None or value > self.gt) and
          (self.le is None or value <= self.le) and
          (self.lt is None or value < self.lt))
    return None if ok else ""


@dataclasses.dataclass(frozen=True)
class Choice(Rule):
  options: tuple = ()

  def allowed(self) -> str:
    return "one of " + ", ".join(repr(o) for o in self.options)

  def problem(self, value):
    try:
      if value in self.options and not isinstance(value, bool):
        return None
    except TypeError:  # unhashable or incomparable
      pass
    if isinstance(value, str):
      close = difflib.get_close_matches(
          value, [o for o in self.options if isinstance(o, str)], n=1)
      if close:
        return f"; did you mean {close[0]!r}?"
    return ""


@dataclasses.dataclass(frozen=True)
class Bool(Rule):

  def allowed(self) -> str:
    return "True or False"

  def problem(self, value):
    return None if isinstance(value, bool) else ""


@dataclasses.dataclass(frozen=True)
class Str(Rule):
  """Free text (a path, a name checked elsewhere)."""

  def allowed(self) -> str:
    return "a string"

  def problem(self, value):
    return None if isinstance(value, str) else ""


@dataclasses.dataclass(frozen=True)
class Dict(Rule):
  """A mapping passed on as keyword arguments (checked by its consumer)."""

  def allowed(self) -> str:
    return "a mapping"

  def problem(self, value):
    ok = isinstance(value, Mapping) or (hasattr(value, "items") and
                                         hasattr(value, "to_dict"))
    return None if ok else ""


@dataclasses.dataclass(frozen=True)
class IntTuple(Rule):
  """A sequence of integers >= ``lo`` (a tuple in configs)."""

  lo: int = 0

  def allowed(self) -> str:
    return f"a sequence of integers >= {self.lo}"

  def problem(self, value):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
      return f" (a {type(value).__name__})"
    ok = all(_is_int(v) and v >= self.lo for v in value)
    return None if ok else ""


@dataclasses.dataclass(frozen=True)
class FloatTuple(Rule):
  """A sequence of finite numbers (a tuple in configs)."""

  def allowed(self) -> str:
    return "a sequence of finite numbers"

  def problem(self, value):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
      return f" (a {type(value).__name__})"
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool)
             and math.isfinite(v) for v in value)
    return None if ok else ""


@dataclasses.dataclass(frozen=True)
class StrTuple(Rule):
  """A sequence of non-empty strings (a tuple in configs)."""

  def allowed(self) -> str:
    return "a sequence of non-empty strings"

  def problem(self, value):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
      return f" (a {type(value).__name__})"
    return None if all(isinstance(v, str) and v for v in value) else ""


Schema = Mapping[str, Rule]


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
  """``{"ppo.batch_size": 4, ...}`` from a nested ConfigDict / dict.

  A mapping whose schema rule is :class:`Dict` stays one leaf; without a
  schema every nested mapping is flattened. An empty mapping is a leaf.
  """
  out = {}
  items = config.items() if isinstance(config, Mapping) or hasattr(
      config, "items") else ()
  for k, v in items:
    name = f"{prefix}{k}"
    if (isinstance(v, Mapping) or hasattr(v, "items")) and len(v):
      out.update(flatten(v, name + "."))
    else:
      out[name] = v
  return out


def _leaves(config: Any, schema: Schema) -> dict[str, Any]:
  flat = {}
  for name, value in flatten(config).items():
    # Fold the entries of a Dict-typed field back into one leaf.
    parts = name.split(".")
    for i in range(1, len(parts)):
      head = ".".join(parts[:i])
      if isinstance(schema.get(head), Dict):
        flat[head] = _get(config, head)
        break
    else:
      flat[name] = value
  return flat


def _get(config: Any, dotted: str, default: Any = KeyError) -> Any:
  node = config
  for part in dotted.split("."):
    try:
      node = node[part]
    except (KeyError, TypeError, AttributeError):
      if default is KeyError:
        raise KeyError(dotted) from None
      return default
  if hasattr(node, "to_dict"):
    node = node.to_dict()
  return node


def get(config: Any, dotted: str, default: Any = None) -> Any:
  """``config``'s value at a dotted path, or ``default`` where absent."""
  return _get(config, dotted, default)


def check(config: Any, schema: Schema, *,
          extra: Iterable[Callable[[Any], None]] = ()) -> None:
  """Checks every field of ``config`` that ``schema`` has a rule for.

  Fields missing from ``config`` are skipped (code reads them with a
  default); fields without a rule are left to their consumer (e.g. an
  algorithm's own argument checks). ``extra`` holds cross-field checks.

  Raises:
    ValueError: naming the first bad field, its allowed range and the value.
  """
  missing = object()
  for name, rule in schema.items():
    value = _get(config, name, missing)
    if value is not missing:
      rule.check(name, value)
  for fn in extra:
    fn(config)


def unruled(config: Any, schema: Schema) -> list[str]:
  """The fields of ``config`` that have no rule in ``schema``."""
  def empty_block(v):
    return (isinstance(v, Mapping) or hasattr(v, "items")) and not len(v)
  # An empty block (e.g. ``controller = {}`` of random search) has no fields.
  return sorted(n for n, v in _leaves(config, schema).items()
                if n not in schema and not empty_block(v))


def describe(config: Any, schema: Schema) -> str:
  """One line per field: ``name = value  (allowed; meaning)``."""
  flat = _leaves(config, schema)
  width = max((len(n) for n in flat), default=0)
  lines = []
  for name in sorted(flat):
    rule = schema.get(name)
    value = flat[name]
    if rule is None:
      lines.append(f"{name:<{width}} = {value!r}")
      continue
    allowed = rule.allowed() + (" or None" if rule.optional else "")
    doc = f"; {rule.doc}" if rule.doc else ""
    lines.append(f"{name:<{width}} = {value!r}  ({allowed}{doc})")
  return "\n".join(lines)


def did_you_mean(name: str, known: Sequence[str]) -> str:
  """``'; did you mean "seed"?'`` for a close known name, else ``''``."""
  close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
  if not close:
    # A misspelt last part: compare it against the last parts of known names.
    last = name.rsplit(".", 1)[-1]
    by_last = {k.rsplit(".", 1)[-1]: k for k in known
               if k.rsplit(".", 1)[0] == name.rsplit(".", 1)[0] or
               "." not in name}
    close = [by_last[c] for c in difflib.get_close_matches(
        last, list(by_last), n=1, cutoff=0.6)]
  return f'; did you mean "{close[0]}"?' if close else ""


# ---------------------------------------------------------------------------
# Rules shared by run kinds.

def controller_rules(prefix: str = "controller") -> dict[str, Rule]:
  """``make_controller`` arguments (nas_jax/controllers/lstm_policy.py)."""
  p = prefix + "."
  return {
      p + "hidden_size": Int(1, 65536, doc="LSTM units of the controller"),
      p + "num_layers": Int(1, 64, doc="stacked LSTM layers"),
      p + "temperature": Float(gt=0, doc="logits are divided by it (ENAS)"),
      p + "tanh_constant": Float(gt=0, optional=True,
                                 doc="logits -> c * tanh(logits / c) (ENAS)"),
      p + "init_scale": Float(gt=0, doc="uniform init range of the "
                              "controller's weights"),
      p + "unroll": Bool(optional=True, doc="trace one step per decision "
                         "(None: by the number of decisions)"),
      p + "policy": Choice(("lstm", "factorized"),
                           doc="autoregressive LSTM or per-decision "
                           "independent softmax (NB201's REINFORCE)"),
      # ENAS (Pham et al. 2018) and its authors' code; see lstm_policy.py.
      p + "op_tanh_reduce": Float(gt=0, doc="op logits' tanh constant is "
                                  "divided by it (ENAS micro: 2.5)"),
      p + "op_bias_init": FloatTuple(optional=True, doc="initial learned "
                                     "bias per op"),
      p + "op_bias_fixed": FloatTuple(optional=True, doc="fixed bias per op "
                                      "added to the op logits"),
      p + "op_bias_fixed_prefix": Str(doc="decisions whose name starts with "
                                      "it get op_bias_fixed ('': all)"),
      p + "enas_anchors": Bool(doc="the authors' anchor states"),
      p + "node_anchor_step": Bool(doc="an extra LSTM step per node "
                                   "(the authors' micro controller)"),
      p + "enas_skips": Bool(doc="ENAS macro skip attention with the "
                             "skip-rate KL penalty"),
      p + "skip_target": Float(gt=0, lt=1, doc="target skip probability "
                               "(ENAS macro: 0.4)"),
      p + "skip_weight": Float(ge=0, doc="weight of the skip-rate KL "
                               "(ENAS macro: 0.8)"),
      p + "pointer_distance_penalty": Float(ge=0, doc="pointer logits minus "
                                            "it times the distance (PTB)"),
      p + "pointer_input_rescale": Bool(doc="rescale the pointer's input "
                                        "(the authors' PTB controller)"),
  }


def image_data_rules() -> dict[str, Rule]:
  """The image ``data`` block (nas_jax/data/datasets.py)."""
  return {
      "data.name": Choice(("digits", "mnist", "fashion_mnist", "cifar10"),
                          doc="data set"),
      "data.data_dir": Str(doc="data folder ('': $NAS_JAX_DATA_DIR or "
                           "../shared/data)"),
      "data.num_val": Int(1, 10**7, doc="validation images (the reward)"),
      "data.max_train": Int(0, 10**8, doc="training images (0: all)"),
      "data.split_seed": Int(0, _INT_MAX, doc="seed of the val split"),
      "data.augment": Choice(("", "cifar"), doc="training augmentation"),
      "data.cutout": Int(0, 1024, doc="cutout size with cifar augmentation"),
  }


def ptb_rules() -> dict[str, Rule]:
  """The ``data`` and ``model`` blocks of the Penn Treebank runs
  (nas_jax/data/ptb.py, nas_jax/children/lm.py)."""
  keep = "keep probability of the dropout"
  return {
      "data.name": Choice(("ptb", "synthetic"), doc="Penn Treebank or a "
                          "synthetic stream"),
      "data.data_dir": Str(doc="data folder ('': $NAS_JAX_DATA_DIR or "
                           "../shared/data)"),
      "data.vocab_size": Int(2, 10**7, doc="synthetic vocabulary"),
      "data.num_tokens": Int(1, 10**9, doc="synthetic tokens"),
      "data.seed": Int(0, _INT_MAX, doc="seed of the synthetic stream"),
      "model.hidden_size": Int(1, 65536, doc="embedding and cell width"),
      "model.embed_keep": Float(gt=0, le=1, doc=keep + " on embeddings"),
      "model.input_keep": Float(gt=0, le=1, doc=keep + " on cell inputs"),
      "model.hidden_keep": Float(gt=0, le=1, doc=keep + " on the "
                                 "recurrent state"),
      "model.output_keep": Float(gt=0, le=1, doc=keep + " on outputs"),
      "model.max_hidden_norm": Float(ge=0, doc="clip of the hidden state's "
                                     "norm (0: none)"),
  }


def algorithm_rules() -> dict[str, Rule]:
  """Options of the algorithms ``tabular_run.build_algorithm`` builds."""
  lr = Float(gt=0, doc="controller Adam learning rate")
  decay = Float(ge=0, lt=1, doc="EMA decay of the reward baseline")
  ent = Float(ge=0, doc="entropy bonus weight (ENAS: 1e-4)")
  clip = Float(gt=0, optional=True, doc="global gradient-norm clip")
  update = Choice(("after", "before"), doc="EMA baseline updated after "
                  "(NAS-RL) or before (ENAS, NB201) the advantage")
  debias = Bool(doc="bias-corrected EMA baseline (NB201's REINFORCE)")
  return {
      "preset": Str(doc="the named preset the config was built from "
                    "(nas_jax.algorithms.presets)"),
      "reinforce.batch_size": Int(1, 1 << 20,
                                  doc="architectures per update (m)"),
      "reinforce.learning_rate": lr, "reinforce.baseline_decay": decay,
      "reinforce.entropy_weight": ent, "reinforce.max_grad_norm": clip,
      "reinforce.entropy_in_reward": Bool(doc="add the entropy bonus to "
                                          "the reward (ENAS) instead of "
                                          "the loss"),
      "ppo.batch_size": Int(1, 1 << 20, doc="architectures per round (m)"),
      "ppo.minibatch_size": Int(1, 1 << 20, optional=True,
                                doc="architectures per SGD step; divides "
                                "batch_size"),
      "ppo.num_epochs": Int(1, 10000, doc="passes over a round's batch (K)"),
      "ppo.learning_rate": lr, "ppo.baseline_decay": decay,
      "ppo.clip_epsilon": Float(gt=0, doc="PPO ratio clip"),
      "ppo.entropy_weight": ent, "ppo.max_grad_norm": clip,
      "reinforce.baseline_update": update,
      "reinforce.debias_baseline": debias,
      "ppo.baseline_update": update, "ppo.debias_baseline": debias,
      "ppo.ratio": Choice(("architecture", "decision"),
                          doc="one PPO ratio per architecture or per "
                          "decision"),
      "ppo.normalize_advantages": Bool(doc="standardise a round's "
                                       "advantages"),
      "q_learning.batch_size": Int(1, 1 << 20, doc="episodes per round"),
      "q_learning.learning_rate": Float(gt=0, le=1, doc="alpha of the "
                                        "Q update (Block-QNN: 0.01)"),
      "q_learning.discount": Float(ge=0, le=1, doc="gamma"),
      "q_learning.q_init": Float(doc="initial Q value"),
      "q_learning.reward_shaping": Choice(("uniform", "final"),
                                          doc="r/T at every step (Block-QNN) "
                                          "or the reward at the last step"),
      "q_learning.epsilon_start": Float(ge=0, le=1, doc="exploration at "
                                        "first"),
      "q_learning.epsilon_end": Float(ge=0, le=1, doc="exploration at "
                                      "the end of the decay"),
      "q_learning.explore_episodes": Int(0, 1 << 30, doc="episodes at "
                                         "epsilon_start"),
      "q_learning.decay_episodes": Int(0, 1 << 30, doc="episodes of the "
                                       "linear decay"),
      "q_learning.replay_size": Int(1, 1 << 24, doc="replay memory"),
      "q_learning.replay_samples": Int(0, 1 << 24, doc="replayed "
                                       "episodes per update"),
      "pnas.beam_size": Int(1, 1 << 20, doc="K, cells kept per round"),
      "pnas.block_order": IntTuple(optional=True, doc="the order "
                                   "decisions are added in"),
      "pnas.fill": Int(0, 1 << 20, doc="choice of an unset decision"),
      "pnas.fit_steps": Int(1, 1 << 20, doc="surrogate Adam steps per "
                            "round"),
      "pnas.surrogate.kind": Choice(("lstm", "mlp"), doc="predictor"),
      "pnas.surrogate.ensemble_size": Int(1, 1024, doc="predictors in the "
                                          "ensemble (PNAS: 5)"),
      "pnas.surrogate.hidden_size": Int(1, 65536, doc="LSTM units"),
      "pnas.surrogate.hidden_sizes": IntTuple(lo=1, doc="MLP widths"),
      "pnas.surrogate.learning_rate": Float(gt=0, doc="Adam step size"),
      "evolution.with_replacement": Bool(doc="tournament drawn with "
                                         "replacement (NB201's REA)"),
      "evolution.population_size": Int(1, 1 << 20, doc="members kept (P)"),
      "evolution.sample_size": Int(1, 1 << 20,
                                   doc="tournament size (S) <= P"),
      "evolution.batch_size": Int(1, 1 << 20, doc="children per round <= P"),
      "random.batch_size": Int(1, 1 << 20, doc="architectures per round"),
      "nonfinite_reward": Choice(("skip", "error"),
                                 doc="a NaN/inf reward: skip that update "
                                 "with a warning, or stop with an error"),
  }


def algorithm_cross_checks(config: Any) -> None:
  """Constraints between algorithm fields."""
  b = get(config, "ppo.batch_size")
  mb = get(config, "ppo.minibatch_size")
  if b is not None and mb is not None and b % mb:
    raise ValueError(f"ppo.minibatch_size ({mb}) must divide ppo.batch_size "
                     f"({b})")
  p = get(config, "evolution.population_size")
  for f in ("evolution.sample_size", "evolution.batch_size"):
    v = get(config, f)
    if p is not None and v is not None and v > p:
      raise ValueError(f"{f} must be <= evolution.population_size ({p}), "
                       f"got {v}")
