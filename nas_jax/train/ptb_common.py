"""What the Penn Treebank run kinds share: reading the data a config names,
building a language model around a cell, the checks of their config fields
(cheap: no data, no compilation) and the vocabulary guard on resume.
"""

from __future__ import annotations

import json
import pathlib

import ml_collections

from nas_jax.children import enas_rnn, lm, rnn_tree_cell
from nas_jax.data import ptb

CELLS = ("enas", "tree", "lstm")


def load_corpus(data: ml_collections.ConfigDict) -> ptb.Corpus:
  """``data.name``: ``"ptb"`` (files under ``data.data_dir`` or the
  default data folder) or ``"synthetic"`` (``vocab_size``, ``num_tokens``)."""
  if data.name == "synthetic":
    return ptb.synthetic(data.get("vocab_size", 64),
                         data.get("num_tokens", 20_000),
                         seed=data.get("seed", 0))
  return ptb.load_named(data.name, data.get("data_dir") or None)


def build_model(vocab_size: int, cell: str, model: ml_collections.ConfigDict,
                *, num_nodes: int = 12, base: int = 8,
                fixed_arch=None) -> lm.LanguageModel:
  """A language model around ``cell`` (``"enas"``: the shared ENAS cell, or
  one fixed cell with ``fixed_arch``; ``"tree"``: NAS-RL's; ``"lstm"``)."""
  h = model.hidden_size
  if cell == "enas":
    module = enas_rnn.ENASCell(
        h, num_nodes,
        fixed_arch=None if fixed_arch is None else tuple(
            int(v) for v in fixed_arch),
        unroll=model.get("unroll", 1), remat=model.get("remat", False),
        max_hidden_norm=model.get("max_hidden_norm") or None)
  elif cell == "tree":
    module = rnn_tree_cell.TreeCell(h, base)
  elif cell == "lstm":
    module = lm.LSTMCell(h)
  else:
    raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
  return lm.LanguageModel(
      vocab_size, module, embed_keep=model.get("embed_keep", 1.0),
      input_keep=model.get("input_keep", 1.0),
      hidden_keep=model.get("hidden_keep", 1.0),
      output_keep=model.get("output_keep", 1.0))


def vocab_meta(corpus: ptb.Corpus) -> dict:
  return {"name": corpus.name, "vocab_size": corpus.vocab_size,
          "fingerprint": ptb.vocab_fingerprint(corpus.vocab)}


def check_vocab(saved: dict | None, corpus: ptb.Corpus, workdir) -> None:
  """Refuses to resume a checkpoint trained on another vocabulary: its
  embedding rows would silently mean other words."""
  if not saved:
    return
  now = vocab_meta(corpus)
  if saved.get("fingerprint") != now["fingerprint"]:
    raise ValueError(
        f"the checkpoint in {workdir} was trained on data "
        f"{saved.get('name')!r} with a vocabulary of "
        f"{saved.get('vocab_size')} words (fingerprint "
        f"{saved.get('fingerprint')}), but the data now is {now['name']!r} "
        f"with {now['vocab_size']} words (fingerprint {now['fingerprint']}). "
        f"Resume with the same data (config.data), or start in a new "
        f"--workdir")


def guard_vocab(workdir, corpus: ptb.Corpus) -> None:
  """Writes ``workdir/data.json`` (the vocabulary) on a fresh run; on a
  resume, refuses data whose vocabulary differs from the checkpoint's."""
  workdir = pathlib.Path(workdir)
  path = workdir / "data.json"
  if path.is_file():
    check_vocab(json.loads(path.read_text()), corpus, workdir)
    return
  workdir.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(vocab_meta(corpus), indent=2))


# -- cheap config checks (dotted field names) ----------------------------------


def check_space_kwargs(config) -> None:
  """``config.space_kwargs`` must build ``config.space`` (the fields
  themselves are checked by the run's ``SCHEMA``)."""
  from nas_jax.spaces import registry  # pylint: disable=g-import-not-at-top
  try:
    registry.get(config.space, **config.space_kwargs)
  except (TypeError, ValueError) as e:
    raise ValueError(f"space_kwargs: {e}") from None
