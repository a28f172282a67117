"""Penn Treebank reader, synthetic stream, batchify and BPTT windows."""

from __future__ import annotations

import numpy as np
import pytest

from nas_jax.data import ptb

needs_ptb = pytest.mark.skipif(
    not ptb.available(),
    reason=f"PTB not found in {ptb.default_dir()} (set $NAS_JAX_DATA_DIR)")


@needs_ptb
def test_ptb_vocabulary_and_sizes():
  corpus = ptb.load()
  assert corpus.vocab_size == 10_000
  # Mikolov's split with <eos> per line: the published token counts.
  assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (
      929_589, 73_760, 82_430)
  assert corpus.vocab[0] == "the"  # most frequent first
  assert ptb.EOS in corpus.vocab and ptb.UNK in corpus.vocab
  for split in ptb.SPLITS:
    ids = corpus.split(split)
    assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < 10_000
  # The first line of ptb.train.txt.
  assert [corpus.vocab[i] for i in corpus.train[:3]] == ["aer", "banknote",
                                                        "berlitz"]


def test_missing_ptb_names_the_file_and_the_fix(tmp_path):
  (tmp_path / "ptb").mkdir()
  (tmp_path / "ptb" / "ptb.train.txt").write_text("a b\n")
  with pytest.raises(FileNotFoundError) as e:
    ptb.load(tmp_path)
  msg = str(e.value)
  assert "ptb.valid.txt, ptb.test.txt" in msg
  assert str(tmp_path / "ptb") in msg and "NAS_JAX_DATA_DIR" in msg
  assert "synthetic" in msg


def test_small_files_build_vocab_and_map_unknown_words(tmp_path):
  d = tmp_path / "ptb"
  d.mkdir()
  (d / "ptb.train.txt").write_text("b a <unk>\na b\n")
  (d / "ptb.valid.txt").write_text("a zebra\n")
  (d / "ptb.test.txt").write_text("b\n")
  c = ptb.load(tmp_path)
  # counts: a 2, b 2, <eos> 2, <unk> 1; ties by spelling.
  assert c.vocab == ("<eos>", "a", "b", "<unk>")
  assert c.train.tolist() == [2, 1, 3, 0, 1, 2, 0]
  assert c.valid.tolist() == [1, 3, 0]  # zebra -> <unk>
  assert ptb.vocab_fingerprint(c.vocab) != ptb.vocab_fingerprint(
      c.vocab[::-1])


def test_synthetic_stream_is_seeded_and_learnable():
  a = ptb.synthetic(32, 5000, seed=3)
  b = ptb.synthetic(32, 5000, seed=3)
  c = ptb.synthetic(32, 5000, seed=4)
  np.testing.assert_array_equal(a.train, b.train)
  assert not np.array_equal(a.train, c.train)
  assert len(a.valid) == 500 and a.vocab_size == 32
  # Each token has at most 3 successors.
  pairs = {(int(x), int(y)) for x, y in zip(a.train[:-1], a.train[1:])}
  succ = {}
  for x, y in pairs:
    succ.setdefault(x, set()).add(y)
  assert max(len(s) for s in succ.values()) <= 3


def test_batchify_and_fixed_windows_cover_every_target_once():
  tokens = np.arange(103, dtype=np.int32)
  s = ptb.batchify(tokens, 4)
  assert s.shape == (4, 25)
  np.testing.assert_array_equal(s[1], np.arange(25, 50))
  w = ptb.fixed_windows(25, 7)
  assert w.tolist() == [[0, 7], [7, 7], [14, 7], [21, 3]]
  assert ptb.fixed_windows(25, 7, drop_last=True).tolist() == w[:3].tolist()
  targets = []
  for start, length in w:
    win = ptb.window(s, start, length, pad_to=7)
    assert win.inputs.shape == (4, 7)
    np.testing.assert_array_equal(win.targets[:, :length],
                                  win.inputs[:, :length] + 1)
    assert win.mask.sum() == 4 * length
    targets.append(win.targets[:, :length])
  np.testing.assert_array_equal(np.concatenate(targets, 1), s[:, 1:])


def test_variable_windows_are_a_pure_function_of_seed_and_epoch():
  a = ptb.variable_windows(2000, 35, seed=0, epoch=1)
  b = ptb.variable_windows(2000, 35, seed=0, epoch=1)
  c = ptb.variable_windows(2000, 35, seed=0, epoch=2)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert a[:, 1].sum() == 1999  # every target once
  np.testing.assert_array_equal(a[1:, 0], np.cumsum(a[:-1, 1]))
  assert a[:-1, 1].min() >= 5 and a[:, 1].max() <= 55
  assert len(set(a[:, 1].tolist())) > 3


def test_bptt_longer_than_data_is_a_clear_error():
  s = ptb.batchify(np.arange(40, dtype=np.int32), 4)  # 10 tokens a stream
  ptb.check_bptt(s, 9)
  with pytest.raises(ValueError, match="BPTT length 10 is longer than the "
                     "valid.*at most 9 steps.*Lower bptt"):
    ptb.check_bptt(s, 10, "valid")
  with pytest.raises(ValueError, match="lower the batch size"):
    ptb.batchify(np.arange(5), 4)


def test_window_schedule_numbers_windows_across_passes():
  fixed = ptb.WindowSchedule(400, 20)
  w = ptb.fixed_windows(400, 20, drop_last=True)
  n = fixed.windows_per_pass()
  assert n == len(w) == 19 and fixed.pad_to == 20
  for g in (0, 5, n, n + 5, 3 * n + 1):
    assert fixed[g] == (int(w[g % n, 0]), int(w[g % n, 1]), g % n == 0)
  var = ptb.WindowSchedule(400, 20, variable=True, seed=3)
  p0 = ptb.variable_windows(400, 20, seed=3, epoch=0, max_length=40)
  p1 = ptb.variable_windows(400, 20, seed=3, epoch=1, max_length=40)
  p0, p1 = p0[p0[:, 1] >= 5], p1[p1[:, 1] >= 5]
  n0 = var.windows_per_pass()
  assert n0 == len(p0) and var.pad_to == 40
  assert var[n0] == (int(p1[0, 0]), int(p1[0, 1]), True)
  assert var[n0 + 2] == (int(p1[2, 0]), int(p1[2, 1]), False)
  assert not np.array_equal(p0, p1)
  # A fresh schedule (a resumed run) maps every index to the same window.
  again = ptb.WindowSchedule(400, 20, variable=True, seed=3)
  assert again[n0 + len(p1) + 1] == var[n0 + len(p1) + 1]
