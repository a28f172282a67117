"""Every config field is checked before anything happens (issue 7, items 2
and 7): a seeded fuzz of at least 200 bad overrides per config (wrong types,
out-of-range and non-finite values, unknown choices, unknown fields), each a
one-line ValueError naming the full dotted field, with nothing written."""

import functools
import importlib.util
import math
import pathlib
import random
import runpy

import ml_collections
import pytest

from nas_jax import config_check as cc
from nas_jax.train import child_search_run, darts_run, enas_ptb_run, enas_run
from nas_jax.train import nasrl_ptb_run, retrain, tabular_run

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = {
    "nasbench201.py": tabular_run,
    "seed003_digits.py": child_search_run,
    "enas_micro.py": enas_run,
    "enas_macro.py": enas_run,
    "enas_retrain.py": retrain,
    "enas_ptb.py": enas_ptb_run,
    "nasrl_ptb.py": nasrl_ptb_run,
    "nasrl_cifar.py": child_search_run,
    "nasnet_cifar.py": child_search_run,
    "blockqnn_digits.py": child_search_run,
    "nasnet_retrain.py": retrain,
    "darts.py": darts_run,
    "custom_table.py": tabular_run,
}
CASES_PER_CONFIG = 240


def _variants():
  for name, module in CONFIGS.items():
    mod = runpy.run_path(str(ROOT / "experiments" / "configs" / name))
    for v in mod["VARIANTS"]:
      yield f"{name}:{v}", mod["get_config"](v), module


VARIANTS = list(_variants())
IDS = [v[0] for v in VARIANTS]


@functools.lru_cache(maxsize=None)
def _main_module():
  spec = importlib.util.spec_from_file_location(
      "trust_main", ROOT / "experiments" / "main.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("spec,config,module", VARIANTS, ids=IDS)
def test_every_field_has_a_rule_and_the_defaults_pass(spec, config, module):
  assert cc.unruled(config, module.SCHEMA) == []
  module.check_config(config)
  listing = cc.describe(config, module.SCHEMA)
  for name in cc.flatten(config):
    if not name.startswith("space_kwargs."):
      assert name in listing
  if config.get("controller"):
    assert "controller Adam learning rate" in listing


def _bad_values(rule: cc.Rule, rng: random.Random) -> list:
  """Values ``rule`` must refuse."""
  wrong_type = ["text", [1], {"a": 1}] + ([] if rule.optional else [None])
  if isinstance(rule, cc.Int):
    out = [rule.lo - 1, rule.lo - rng.randint(2, 10**6), 1.5, True,
           float("nan")]
    if rule.hi < 2**31 - 1:
      out.append(rule.hi + rng.randint(1, 10**6))
    return out + wrong_type
  if isinstance(rule, cc.Float):
    out = [float("nan"), float("inf"), -float("inf"), "0.1"]
    if rule.ge is not None:
      out.append(rule.ge - rng.uniform(1e-3, 10))
    if rule.gt is not None:
      out += [rule.gt, rule.gt - rng.uniform(1e-3, 10)]
    if rule.le is not None:
      out.append(rule.le + rng.uniform(1e-3, 10))
    if rule.lt is not None:
      out += [rule.lt, rule.lt + rng.uniform(1e-3, 10)]
    return out + wrong_type
  if isinstance(rule, cc.Choice):
    return [v for v in ["no_such_" + str(rng.randint(0, 99)), 3, True] +
            wrong_type if v not in rule.options]
  if isinstance(rule, cc.Bool):
    return ["True", 1] + ([] if rule.optional else [None])
  if isinstance(rule, cc.Str):
    return [3, ["a"]] + ([] if rule.optional else [None])
  if isinstance(rule, cc.Dict):
    return ["a", 3, [1]]
  if isinstance(rule, cc.StrTuple):
    return ["a", 3, ("",), (1,)] + ([] if rule.optional else [None])
  if isinstance(rule, cc.FloatTuple):
    return ["a", 3, (float("nan"),), (True,)] + ([] if rule.optional
                                                  else [None])
  if isinstance(rule, cc.IntTuple):
    return ["a", 3, (rule.lo - 1,), (1.5,)] + ([] if rule.optional else [None])
  raise AssertionError(rule)


def _set(config, dotted, value):
  node = config
  parts = dotted.split(".")
  for p in parts[:-1]:
    node = node[p]
  node[parts[-1]] = value


@pytest.mark.parametrize("spec,config,module", VARIANTS, ids=IDS)
def test_fuzz_bad_values_give_one_line_naming_the_field(spec, config, module,
                                                        tmp_path):
  rng = random.Random(spec)
  present = set(cc.flatten(config))
  fields = [n for n in module.SCHEMA if n in present]
  cases = [(f, v) for f in fields for v in _bad_values(module.SCHEMA[f], rng)]
  rng.shuffle(cases)
  while len(cases) < CASES_PER_CONFIG:
    cases += cases[: CASES_PER_CONFIG - len(cases)]
  checked = 0
  for field, value in cases:
    bad = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
    _set(bad, field, value)
    with pytest.raises(ValueError) as e:
      module.check_config(bad)
    msg = str(e.value)
    assert "\n" not in msg and field in msg, (field, value, msg)
    if not (isinstance(value, float) and math.isnan(value)):
      assert repr(value)[:20] in msg or str(value)[:20] in msg, msg
    checked += 1
  assert checked >= CASES_PER_CONFIG
  assert list(tmp_path.iterdir()) == []  # checking wrote nothing


@pytest.mark.parametrize("spec,config,module", VARIANTS[::3],
                         ids=IDS[::3])
def test_fuzz_unknown_fields_say_did_you_mean(spec, config, module):
  main = _main_module()
  path, _, _ = spec.partition(":")
  arg = f"--config=experiments/configs/{spec}"
  rng = random.Random(spec + "typo")
  names = [n for n in cc.flatten(config) if not n.startswith("space_kwargs")]
  n = 0
  for _ in range(60):
    name = rng.choice(names)
    i = rng.randrange(len(name))
    typo = name[:i] + name[i + 1:] if rng.random() < 0.5 else (
        name[:i] + "x" + name[i:])
    if typo in names or typo.endswith(".") or ".." in typo or \
        typo.startswith(".") or any(k.startswith(typo + ".") for k in names):
      continue
    import os
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
      msg = main._explain_override(["main.py", arg, f"--config.{typo}=1"])
    finally:
      os.chdir(cwd)
    assert msg is not None and "\n" not in msg, typo
    assert f"no field {typo!r}" in msg
    n += 1
  assert n >= 30


def test_known_misspellings_suggest_the_field():
  assert cc.did_you_mean("sed", ["seed", "space"]) == '; did you mean "seed"?'
  assert cc.did_you_mean("ppo.batchsize", ["ppo.batch_size", "seed"]) == \
      '; did you mean "ppo.batch_size"?'
  with pytest.raises(ValueError, match=r"reward_column must be one of .*got "
                     r"'valid_acc_12'; did you mean 'valid_acc_12ep'\?"):
    cc.check({"reward_column": "valid_acc_12"}, tabular_run.SCHEMA)


def test_image_data_rules_name_every_data_set():
  """config_check stays free of heavy imports, so its list of image data
  sets is written out; it must be the loader's."""
  from nas_jax.data import datasets
  assert cc.image_data_rules()["data.name"].options == tuple(datasets.NAMES)
