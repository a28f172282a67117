"""Tests for ``nas_jax.metrics``: JSONL and event files written and read back,
checksums, resume truncation, progress lines."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from nas_jax import metrics

SCALARS = [
    (0, {"reward": 0.125, "loss": 2.5}),
    (1, {"reward": 0.5, "loss": 1.75, "eval/acc": 0.3}),
    (5, {"reward": np.float32(0.875), "loss": np.float64(0.1)}),
    (7, {"reward": 0.9, "loss": 1e-7}),
]


def _write_all(workdir, items=SCALARS, **kwargs):
  with metrics.MetricWriter(workdir, **kwargs) as w:
    for step, scalars in items:
      w.write_scalars(step, scalars)


def _expected(items=SCALARS):
  out = {}
  for step, scalars in items:
    for k, v in scalars.items():
      out.setdefault(k, []).append((step, float(v)))
  return out


def _assert_close(got, want, rel=1e-6):
  assert sorted(got) == sorted(want)
  for tag in want:
    assert [s for s, _ in got[tag]] == [s for s, _ in want[tag]], tag
    np.testing.assert_allclose([v for _, v in got[tag]],
                               [v for _, v in want[tag]], rtol=rel, atol=0)


def test_jsonl_roundtrip(tmp_path):
  _write_all(tmp_path)
  lines = metrics.read_jsonl(tmp_path / "metrics.jsonl")
  assert [ln["step"] for ln in lines] == [s for s, _ in SCALARS]
  for ln, (_, scalars) in zip(lines, SCALARS):
    assert isinstance(ln["wall_time"], float)
    assert set(ln) == {"step", "wall_time", *scalars}
    for k, v in scalars.items():
      assert ln[k] == float(v)  # JSON keeps doubles exactly.


def test_event_files_roundtrip(tmp_path):
  _write_all(tmp_path)
  files = metrics.event_files(tmp_path / "tensorboard")
  assert len(files) == 1 and files[0].name.startswith("events.out.tfevents.")
  # simple_value is a float32, hence the tolerance.
  _assert_close(metrics.read_events(tmp_path / "tensorboard"), _expected())


def test_event_file_records_framing(tmp_path):
  _write_all(tmp_path)
  (path,) = metrics.event_files(tmp_path / "tensorboard")
  records = metrics.read_records(path)
  # The file_version event, then one event per write_scalars call.
  assert len(records) == 1 + len(SCALARS)
  data = path.read_bytes()
  (length,) = struct.unpack("<Q", data[:8])
  assert length == len(records[0])
  # CRC-32C("123456789") = 0xe3069283 (the standard check value), masked.
  crc = 0xe3069283
  masked = (((crc >> 15) | (crc << 17)) + 0xa282ead8) & 0xffffffff
  assert metrics.masked_crc32c(b"123456789") == masked


def test_tensorboard_off(tmp_path):
  _write_all(tmp_path, tensorboard=False)
  assert not (tmp_path / "tensorboard").exists()
  assert len(metrics.read_jsonl(tmp_path / "metrics.jsonl")) == len(SCALARS)


def test_disabled_writer_writes_nothing(tmp_path):
  _write_all(tmp_path / "run", enabled=False)
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["length", "data", "data_crc"])
def test_crc_catches_a_corrupted_byte(tmp_path, where):
  _write_all(tmp_path)
  (path,) = metrics.event_files(tmp_path / "tensorboard")
  data = bytearray(path.read_bytes())
  first_len = struct.unpack("<Q", data[:8])[0]
  second = 12 + first_len + 4  # Start of the second record.
  second_len = struct.unpack("<Q", data[second:second + 8])[0]
  offset = {"length": second + 2, "data": second + 12 + second_len // 2,
            "data_crc": second + 12 + second_len + 1}[where]
  data[offset] ^= 0x10
  path.write_bytes(bytes(data))
  with pytest.raises(metrics.CorruptRecordError, match="checksum"):
    metrics.read_events(tmp_path / "tensorboard")


def test_truncated_tail_is_tolerated(tmp_path):
  _write_all(tmp_path)
  (path,) = metrics.event_files(tmp_path / "tensorboard")
  path.write_bytes(path.read_bytes()[:-7])  # A writer killed mid-record.
  _assert_close(metrics.read_events(tmp_path / "tensorboard"),
                _expected(SCALARS[:-1]))


def test_resume_appends(tmp_path):
  _write_all(tmp_path, SCALARS[:2])
  _write_all(tmp_path, SCALARS[2:])
  lines = metrics.read_jsonl(tmp_path / "metrics.jsonl")
  assert [ln["step"] for ln in lines] == [s for s, _ in SCALARS]
  assert len(metrics.event_files(tmp_path / "tensorboard")) == 2
  _assert_close(metrics.read_events(tmp_path / "tensorboard"), _expected())


def test_truncate_after(tmp_path):
  # A killed run wrote steps 0, 1, 5, 7; its checkpoint covers step 1.
  _write_all(tmp_path)
  with metrics.MetricWriter(tmp_path) as w:
    assert w.truncate_after(1) == 2
    w.write_scalars(2, {"reward": 0.6})
    w.write_scalars(3, {"reward": 0.7})
  lines = metrics.read_jsonl(tmp_path / "metrics.jsonl")
  assert [ln["step"] for ln in lines] == [0, 1, 2, 3]
  assert [ln["reward"] for ln in lines] == [0.125, 0.5, 0.6, 0.7]
  # The resumed file's START event at step 2 purges steps >= 2 of the old
  # file (steps 5 and 7), as TensorBoard would.
  want = _expected(SCALARS[:2] + [(2, {"reward": 0.6}), (3, {"reward": 0.7})])
  _assert_close(metrics.read_events(tmp_path / "tensorboard"), want)


def test_truncate_jsonl_drops_half_written_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 0, "a": 1}\n{"step": 4, "a": 2}\n{"step": 9, "a')
  assert metrics.truncate_jsonl(path, 4) == 1
  assert metrics.read_jsonl(path) == [{"step": 0, "a": 1}, {"step": 4, "a": 2}]
  assert metrics.truncate_jsonl(tmp_path / "absent.jsonl", 3) == 0


def test_append_after_half_written_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 0, "a": 1}\n{"step": 1, "a"')
  with metrics.MetricWriter(tmp_path, tensorboard=False) as w:
    w.write_scalars(1, {"a": 3})
  lines = metrics.read_jsonl(path)
  assert [(ln["step"], ln["a"]) for ln in lines] == [(0, 1), (1, 3)]


def test_read_jsonl_rejects_bad_middle_line(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text('{"step": 0}\nnot json\n{"step": 1}\n')
  with pytest.raises(ValueError, match="m.jsonl:2"):
    metrics.read_jsonl(path)


def test_bad_inputs(tmp_path):
  with metrics.MetricWriter(tmp_path) as w:
    with pytest.raises(ValueError, match="reserved"):
      w.write_scalars(0, {"step": 1.0})
    with pytest.raises(TypeError):
      w.write_scalars(1.5, {"a": 1.0})
  with pytest.raises(ValueError, match="closed"):
    w.write_scalars(0, {"a": 1.0})
  with pytest.raises(ValueError, match="local directory"):
    metrics.MetricWriter("gs://bucket/run")


def test_tensor_scalars_are_read(tmp_path):
  """Event files from other writers store scalars as tensors."""
  from tensorboardX import record_writer
  from tensorboardX.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
  logdir = tmp_path / "tb"
  logdir.mkdir()
  w = record_writer.RecordWriter(str(logdir / "events.out.tfevents.1.x"))
  tensors = [tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[0.5]),
             tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE,
                                    tensor_content=struct.pack("<d", 0.25)),
             tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, int64_val=[3])]
  for step, t in enumerate(tensors):
    w.write(event_pb2.Event(step=step, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag="x", tensor=t)]
    )).SerializeToString())
  w.close()
  assert metrics.read_events(logdir) == {"x": [(0, 0.5), (1, 0.25), (2, 3.0)]}


class FakeClock:

  def __init__(self, t: float = 100.0):
    self.t = t

  def __call__(self) -> float:
    return self.t


def test_progress_logger_eta():
  clock = FakeClock()
  p = metrics.ProgressLogger(120, every_seconds=10, name="search",
                             unit="children", clock=clock)
  clock.t += 1.0
  # The first update logs: 4 children in 1 s.
  assert p.update(4) == ("search: 4/120 (3.3%) | 4.0 children/s | "
                         "ETA 0m29s")
  clock.t += 5.0
  assert p.update(4) is None  # Within every_seconds of the last line.
  clock.t += 11.386
  assert p.update(29) == ("search: 37/120 (30.8%) | 2.1 children/s | "
                          "ETA 0m39s")
  clock.t += 3600.0
  line = p.update(1, force=True, extra="best 0.913")
  assert line.endswith("| 0.011 children/s | ETA 2h10m06s | best 0.913"), line
  clock.t += 1.0
  assert p.update(82).startswith("search: 120/120 (100.0%) | ")
  assert p.format_line().endswith("| done in 1h00m18s")


def test_progress_logger_resume_and_unknown_total():
  clock = FakeClock()
  p = metrics.ProgressLogger(100, name="rounds", unit="rounds", initial=40,
                             clock=clock)
  assert p.format_line() == "rounds: 40/100 (40.0%) | ? rounds/s | ETA ?"
  clock.t += 30.0
  # The rate counts the 10 rounds done since the resume, not 50.
  assert p.update(10) == ("rounds: 50/100 (50.0%) | 0.33 rounds/s | "
                          "ETA 2m30s")
  q = metrics.ProgressLogger(None, name="train", clock=clock)
  clock.t += 2.0
  assert q.update(500) == "train: 500 steps | 250 steps/s"


@pytest.mark.parametrize("seconds,text", [
    (0, "0m00s"), (39.4, "0m39s"), (59.6, "1m00s"), (3725, "1h02m05s"),
    (90061, "1d01h01m")])
def test_format_duration(seconds, text):
  assert metrics.format_duration(seconds) == text


def test_jsonl_is_plain_json(tmp_path):
  _write_all(tmp_path, SCALARS[:1])
  raw = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert json.loads(raw[0])["reward"] == 0.125
