"""Run metrics: a JSONL log, TensorBoard event files, and progress lines.

``MetricWriter`` writes every ``write_scalars`` call twice:

* ``<workdir>/metrics.jsonl``: one JSON object per line,
  ``{"step": 12, "wall_time": 1718000000.5, "reward": 0.91, ...}``, flushed
  on every call, so a killed run keeps every line it wrote. It is the source
  of truth (doubles, readable with ``read_jsonl`` or any JSON tool).
* ``<workdir>/tensorboard/events.out.tfevents.*``: TensorBoard event files
  (``tensorboard --logdir <workdir>/tensorboard``). Records are framed and
  checksummed by ``tensorboardX``'s synchronous ``RecordWriter`` and built
  from the ``Event`` / ``Summary`` protos it ships. We do not use its
  ``SummaryWriter``: that one queues events to a background thread through a
  ``multiprocessing.Queue``, and its ``flush()`` does not wait for the queue,
  so "flushed" would not mean "on disk".

``read_events`` reads event files back with neither TensorFlow nor the
``tensorboard`` package: it parses the TFRecord framing itself (little-endian
``uint64`` length, ``uint32`` masked CRC-32C of the length, the data, a
``uint32`` masked CRC-32C of the data), verifies both checksums and decodes
``Event`` protos.

Resuming: ``MetricWriter`` appends to an existing ``metrics.jsonl`` and opens
a new event file beside the old ones. A run resumed from a checkpoint at step
``s`` calls ``truncate_after(s)``: it rewrites ``metrics.jsonl`` without the
lines a killed run wrote past ``s``, and writes a ``SessionLog.START`` event at
step ``s + 1``, which tells TensorBoard (and ``read_events``) to discard the
earlier files' events at steps ``> s`` -- TensorBoard's own purge mechanism.

On a multi-host run only one process should write: pass
``enabled=jax.process_index() == 0``; a disabled writer does nothing.

``ProgressLogger`` logs ``"search: 37/120 (30.8%) | 2.1 children/s | ETA
0m39s"`` lines through absl logging at most every ``every_seconds``.
"""

from __future__ import annotations

import json
import operator
import os
import pathlib
import socket
import struct
import time
from typing import Any, Callable, Iterable, Mapping

from absl import logging
from tensorboardX import record_writer as tbx_record_writer
from tensorboardX.proto import event_pb2
from tensorboardX.proto import summary_pb2
from tensorboardX.proto import types_pb2

JSONL_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
RESERVED_KEYS = ("step", "wall_time")
_FILE_VERSION = "brain.Event:2"


class CorruptRecordError(ValueError):
  """A record of an event file fails its length or data checksum."""


# --------------------------------------------------------------------------
# Writing.


class MetricWriter:
  """Writes scalars to ``metrics.jsonl`` and TensorBoard event files.

  Usage::

    with MetricWriter(workdir) as w:
      w.write_scalars(step, {"reward": 0.91, "loss": 0.2})

  Attributes:
    workdir: the run directory (created if absent).
    jsonl_path: ``<workdir>/metrics.jsonl``.
    tensorboard_dir: ``<workdir>/tensorboard``, or None when TensorBoard
      output is off.
  """

  def __init__(self, workdir: str | os.PathLike[str], *,
               tensorboard: bool = True, enabled: bool = True,
               flush_every_seconds: float = 5.0):
    """Opens (appends to) the run's metric files.

    Args:
      workdir: a local directory (a mounted bucket works; a ``gs://`` URL
        does not, since objects in a bucket cannot be appended to).
      tensorboard: also write TensorBoard event files.
      enabled: False makes every method a no-op (non-zero hosts of a
        multi-host run).
      flush_every_seconds: event files are fsynced at most this often (and
        on ``flush`` / ``close``); ``metrics.jsonl`` is flushed every call.
    """
    if "://" in os.fspath(workdir):
      raise ValueError(f"MetricWriter needs a local directory (or a mounted "
                       f"bucket), got URL {os.fspath(workdir)!r}")
    self.workdir = pathlib.Path(workdir)
    self.jsonl_path = self.workdir / JSONL_NAME
    self.tensorboard_dir = (self.workdir / TENSORBOARD_DIR
                            if tensorboard else None)
    self._enabled = enabled
    self._flush_every = flush_every_seconds
    self._last_flush = time.monotonic()
    self._events: tbx_record_writer.RecordWriter | None = None
    self._jsonl = None
    self._closed = False
    if not enabled:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    _drop_partial_last_line(self.jsonl_path)
    self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")

  # -- context manager ----------------------------------------------------

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  # -- writing ---------------------------------------------------------------

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes one line to ``metrics.jsonl`` and one event with the scalars.

    Args:
      step: the x-axis value (an integer; numpy / JAX integer scalars work).
      scalars: ``{name: value}``; values are anything ``float()`` takes
        (Python, numpy or one-element JAX numbers). Names may contain ``/``
        (TensorBoard groups on it) but must not be ``step`` or ``wall_time``.
    """
    self._check_open()
    if not self._enabled:
      return
    step = operator.index(step)
    values = {}
    for name, value in scalars.items():
      if not isinstance(name, str) or not name:
        raise ValueError(f"scalar names must be non-empty strings, got "
                         f"{name!r}")
      if name in RESERVED_KEYS:
        raise ValueError(f"scalar name {name!r} is reserved (the JSONL line "
                         f"has {RESERVED_KEYS} fields)")
      values[name] = float(value)
    wall_time = time.time()
    self._jsonl.write(json.dumps({"step": step, "wall_time": wall_time,
                                  **values}) + "\n")
    self._jsonl.flush()
    if self.tensorboard_dir is not None and values:
      summary = summary_pb2.Summary(value=[
          summary_pb2.Summary.Value(tag=name, simple_value=v)
          for name, v in values.items()])
      self._write_event(event_pb2.Event(wall_time=wall_time, step=step,
                                        summary=summary))
      if time.monotonic() - self._last_flush >= self._flush_every:
        self.flush()

  def truncate_after(self, step: int,
                     expected_steps: Iterable[int] | None = None) -> int:
    """Forgets what a killed run wrote past ``step`` (call on resume).

    Rewrites ``metrics.jsonl`` keeping the lines with ``step <= step`` (and
    dropping a half-written or damaged line with a warning), and writes a
    ``SessionLog.START`` event at ``step + 1``, so TensorBoard and
    ``read_events`` discard the older event files' values at later steps.

    Args:
      step: the last step the checkpoint covers.
      expected_steps: the steps the file should hold (e.g. every round so
        far). Lines missing from a damaged or deleted ``metrics.jsonl`` are
        rebuilt from the TensorBoard event files where those hold them;
        steps found in neither are named in a warning.

    Returns:
      The number of JSONL lines removed.
    """
    self._check_open()
    if not self._enabled:
      return 0
    step = operator.index(step)
    self._jsonl.close()
    try:
      removed = truncate_jsonl(self.jsonl_path, step)
      if expected_steps is not None:
        self._recover(step, sorted(set(expected_steps)))
    finally:
      self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
    if self.tensorboard_dir is not None:
      self._write_event(event_pb2.Event(
          wall_time=time.time(), step=step + 1,
          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
      self.flush()
    if removed:
      logging.info("metrics: dropped %d line(s) past step %d from %s",
                   removed, step, self.jsonl_path)
    return removed

  def _recover(self, step: int, expected: list[int]) -> None:
    """Refills lines of ``metrics.jsonl`` missing for ``expected`` steps."""
    have = set()
    if self.jsonl_path.exists():
      have = {r["step"] for r in read_jsonl(self.jsonl_path)
              if isinstance(r, dict) and "step" in r}
    missing = [s for s in expected if s <= step and s not in have]
    if not missing:
      return
    rebuilt = {}
    if self.tensorboard_dir is not None and self.tensorboard_dir.is_dir():
      try:
        events = read_events(self.tensorboard_dir)
      except (CorruptRecordError, OSError) as e:
        logging.warning("metrics: cannot read %s to rebuild lost lines: %s",
                        self.tensorboard_dir, e)
        events = {}
      for tag, points in events.items():
        for s, v in points:
          if s in missing:
            rebuilt.setdefault(s, {})[tag] = v
    if rebuilt:
      lines = read_jsonl(self.jsonl_path) if self.jsonl_path.exists() else []
      lines += [{"step": s, "wall_time": 0.0, **vals}
                for s, vals in rebuilt.items()]
      lines.sort(key=lambda r: r["step"])
      tmp = self.jsonl_path.with_name(self.jsonl_path.name + ".tmp")
      tmp.write_text("".join(json.dumps(r) + "\n" for r in lines),
                     encoding="utf-8")
      os.replace(tmp, self.jsonl_path)
      logging.warning("metrics: %s lacked step(s) %s; rebuilt them from the "
                      "TensorBoard event files", self.jsonl_path,
                      _ranges(sorted(rebuilt)))
    lost = [s for s in missing if s not in rebuilt]
    if lost:
      logging.warning("metrics: %s lacks step(s) %s (the file was damaged or "
                      "deleted) and no event file holds them; those points "
                      "stay missing", self.jsonl_path, _ranges(lost))

  def flush(self) -> None:
    """Pushes everything written so far to disk (fsync)."""
    if self._closed or not self._enabled or self._jsonl.closed:
      return
    self._jsonl.flush()
    os.fsync(self._jsonl.fileno())
    if self._events is not None:
      self._events.flush()
    self._last_flush = time.monotonic()

  def close(self) -> None:
    """Flushes and closes the files; further writes raise. Idempotent."""
    if self._closed:
      return
    try:
      self.flush()
    except (OSError, ValueError) as e:  # never hide the error that got here
      logging.warning("metrics: flush on close failed: %s", e)
    if self._jsonl is not None:
      self._jsonl.close()
    if self._events is not None:
      self._events.close()
    self._closed = True

  # -- helpers -------------------------------------------------------------

  def _check_open(self) -> None:
    if self._closed:
      raise ValueError("MetricWriter is closed")

  def _write_event(self, event: event_pb2.Event) -> None:
    if self._events is None:
      self.tensorboard_dir.mkdir(parents=True, exist_ok=True)
      # The nanosecond suffix orders two files opened in the same second on
      # the same host (TensorBoard reads a directory's files in name order).
      now = time.time_ns()
      name = (f"events.out.tfevents.{now // 10**9}.{socket.gethostname()}."
              f"{now}")
      self._events = tbx_record_writer.RecordWriter(
          str(self.tensorboard_dir / name))
      self._events.write(event_pb2.Event(
          wall_time=now / 1e9, file_version=_FILE_VERSION).SerializeToString())
    self._events.write(event.SerializeToString())


def truncate_jsonl(path: str | os.PathLike[str], step: int) -> int:
  """Rewrites a metrics JSONL file keeping lines with ``step <= step``.

  A half-written last line (a killed writer) is dropped too. The file is
  replaced atomically. Returns the number of lines removed (0 if the file
  does not exist).
  """
  path = pathlib.Path(path)
  if not path.exists():
    return 0
  lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
  kept = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      ok = isinstance(record, dict) and isinstance(record.get("step"), int)
    except json.JSONDecodeError:
      ok = False
    if not ok:
      if i != len(lines) - 1:  # the last one is merely half-written
        logging.warning("metrics: %s:%d is damaged (%r); dropped", path,
                        i + 1, line[:80])
      continue
    if record["step"] <= step:
      kept.append(line if line.endswith("\n") else line + "\n")
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text("".join(kept), encoding="utf-8")
  os.replace(tmp, path)
  return sum(1 for line in lines if line.strip()) - len(kept)


def _ranges(steps: list[int]) -> str:
  """``[0, 1, 2, 5] -> "0-2, 5"``."""
  out, i = [], 0
  while i < len(steps):
    j = i
    while j + 1 < len(steps) and steps[j + 1] == steps[j] + 1:
      j += 1
    out.append(str(steps[i]) if i == j else f"{steps[i]}-{steps[j]}")
    i = j + 1
  return ", ".join(out)


def _drop_partial_last_line(path: pathlib.Path) -> None:
  """Cuts a last line with no newline (a killed writer) so appends stay valid."""
  if not path.exists() or path.stat().st_size == 0:
    return
  with open(path, "rb+") as f:
    data = f.read()
    if data.endswith(b"\n"):
      return
    keep = data.rfind(b"\n") + 1
    logging.warning("metrics: dropping a half-written last line of %s: %r",
                    path, data[keep:keep + 80])
    f.truncate(keep)


# --------------------------------------------------------------------------
# Reading.


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """Reads a JSONL file into a list of dicts.

  A half-written last line (the writer was killed mid-line) is skipped with a
  warning; a malformed line elsewhere raises ``ValueError``.
  """
  path = pathlib.Path(path)
  lines = path.read_text(encoding="utf-8").splitlines()
  out = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:
        logging.warning("%s: skipping a half-written last line", path)
        continue
      raise ValueError(f"{path}:{i + 1}: not a JSON line ({e}): "
                       f"{line[:80]!r}") from None
  return out


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC-32C: ``((c >> 15) | (c << 17)) + 0xa282ead8``."""
  return tbx_record_writer.masked_crc32c(data)


def read_records(path: str | os.PathLike[str]) -> list[bytes]:
  """Reads the payloads of a TFRecord file, verifying both checksums.

  Raises:
    CorruptRecordError: a length or data checksum does not match.

  A record cut short at the end of the file (the writer was killed) ends the
  read with a warning, as TensorBoard does.
  """
  data = pathlib.Path(path).read_bytes()
  records = []
  pos = 0
  while pos < len(data):
    if pos + 12 > len(data):
      logging.warning("%s: truncated record header at byte %d", path, pos)
      break
    header = data[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
    if masked_crc32c(header) != length_crc:
      raise CorruptRecordError(f"{path}: length checksum mismatch in the "
                               f"record at byte {pos}")
    start, end = pos + 12, pos + 12 + length
    if end + 4 > len(data):
      logging.warning("%s: truncated record at byte %d", path, pos)
      break
    payload = data[start:end]
    (data_crc,) = struct.unpack("<I", data[end:end + 4])
    if masked_crc32c(payload) != data_crc:
      raise CorruptRecordError(f"{path}: data checksum mismatch in the "
                               f"record at byte {pos}")
    records.append(payload)
    pos = end + 4
  return records


def event_files(logdir: str | os.PathLike[str]) -> list[pathlib.Path]:
  """The event files directly in ``logdir``, in TensorBoard's (name) order."""
  return sorted(p for p in pathlib.Path(logdir).iterdir()
                if p.is_file() and "tfevents" in p.name)


def read_events(
    logdir: str | os.PathLike[str]) -> dict[str, list[tuple[int, float]]]:
  """Reads the scalars of every event file in ``logdir``.

  Files are read in name order (TensorBoard's). A ``SessionLog.START`` event
  at step ``s`` discards the values read so far at steps ``>= s`` (what
  ``MetricWriter.truncate_after`` writes on resume; TensorBoard does the
  same). Scalars stored as ``simple_value`` or as one-element float / int
  tensors are returned; other summaries (images, histograms) are skipped.

  Args:
    logdir: the directory holding ``events.out.tfevents.*`` files
      (subdirectories, which TensorBoard shows as separate runs, are not
      read).

  Returns:
    ``{tag: [(step, value), ...]}`` in the order written.

  Raises:
    CorruptRecordError: a record fails its checksum.
  """
  out: dict[str, list[tuple[int, float]]] = {}
  for path in event_files(logdir):
    for payload in read_records(path):
      event = event_pb2.Event.FromString(payload)
      what = event.WhichOneof("what")
      if (what == "session_log" and
          event.session_log.status == event_pb2.SessionLog.START):
        for tag, points in out.items():
          out[tag] = [(s, v) for s, v in points if s < event.step]
      elif what == "summary":
        for value in event.summary.value:
          scalar = _scalar_of(value)
          if scalar is not None:
            out.setdefault(value.tag, []).append((event.step, scalar))
  return out


def _scalar_of(value: summary_pb2.Summary.Value) -> float | None:
  kind = value.WhichOneof("value")
  if kind == "simple_value":
    return float(value.simple_value)
  if kind != "tensor":
    return None
  t = value.tensor
  formats = {types_pb2.DT_FLOAT: ("<f", "float_val"),
             types_pb2.DT_DOUBLE: ("<d", "double_val"),
             types_pb2.DT_INT32: ("<i", "int_val"),
             types_pb2.DT_INT64: ("<q", "int64_val")}
  if t.dtype not in formats:
    return None
  fmt, field = formats[t.dtype]
  if t.tensor_content:
    vals = [v for (v,) in struct.iter_unpack(fmt, t.tensor_content)]
  else:
    vals = list(getattr(t, field))
  return float(vals[0]) if len(vals) == 1 else None


# --------------------------------------------------------------------------
# Progress lines.


def format_duration(seconds: float) -> str:
  """``39 -> "0m39s"``, ``3725 -> "1h02m05s"``, ``90061 -> "1d01h01m"``."""
  s = int(round(max(seconds, 0.0)))
  if s >= 86400:
    return f"{s // 86400}d{s % 86400 // 3600:02d}h{s % 3600 // 60:02d}m"
  if s >= 3600:
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"
  return f"{s // 60}m{s % 60:02d}s"


def _format_rate(rate: float) -> str:
  if rate >= 100:
    return f"{rate:.0f}"
  if rate >= 1:
    return f"{rate:.1f}"
  return f"{rate:.2g}"


class ProgressLogger:
  """Logs ``"name: done/total (pct) | rate unit/s | ETA"`` lines.

  The rate is measured from the logger's creation (or the last ``reset``),
  counting only the work done since then, so a resumed run that starts at
  ``initial=37`` reports its own speed, not ``37`` items in zero seconds.
  A line is logged on the first ``update``, then at most every
  ``every_seconds``, and always when ``total`` is reached.

  Usage::

    progress = ProgressLogger(120, name="search", unit="children")
    for ...:
      progress.update(4, extra=f"best {best:.3f}")
  """

  def __init__(self, total: int | None, *, every_seconds: float = 10.0,
               name: str = "progress", unit: str = "steps", initial: int = 0,
               clock: Callable[[], float] = time.monotonic):
    """Starts the clock.

    Args:
      total: the count at which the work is done (None: unknown; no
        percentage or ETA).
      every_seconds: the minimum time between two logged lines.
      name: the line's prefix.
      unit: what is counted, plural (``"children"``).
      initial: the count already done (a resumed run).
      clock: returns seconds (injectable for tests).
    """
    if total is not None and total < 0:
      raise ValueError(f"total must be >= 0 or None, got {total}")
    self.total = total
    self.every_seconds = every_seconds
    self.name = name
    self.unit = unit
    self._clock = clock
    self.count = initial
    self.reset(initial)

  def reset(self, count: int | None = None) -> None:
    """Restarts the rate measurement (e.g. after compilation)."""
    if count is not None:
      self.count = count
    self._start_count = self.count
    self._start_time = self._clock()
    self._last_log: float | None = None

  def rate(self) -> float | None:
    """Items per second since the start, or None before any progress."""
    elapsed = self._clock() - self._start_time
    done = self.count - self._start_count
    if done <= 0 or elapsed <= 0:
      return None
    return done / elapsed

  def format_line(self, extra: str | None = None) -> str:
    """The progress line for the current count (without logging it)."""
    parts = []
    if self.total is not None:
      pct = 100.0 * self.count / self.total if self.total else 100.0
      parts.append(f"{self.name}: {self.count}/{self.total} ({pct:.1f}%)")
    else:
      parts.append(f"{self.name}: {self.count} {self.unit}")
    rate = self.rate()
    parts.append(f"{_format_rate(rate)} {self.unit}/s" if rate is not None
                 else f"? {self.unit}/s")
    if self.total is not None:
      remaining = max(self.total - self.count, 0)
      if remaining == 0:
        elapsed = self._clock() - self._start_time
        parts.append(f"done in {format_duration(elapsed)}")
      elif rate is not None:
        parts.append(f"ETA {format_duration(remaining / rate)}")
      else:
        parts.append("ETA ?")
    if extra:
      parts.append(extra)
    return " | ".join(parts)

  def update(self, n: int = 1, *, extra: str | None = None,
             force: bool = False) -> str | None:
    """Adds ``n`` to the count; logs a line when due.

    Args:
      n: items just finished.
      extra: text appended to the line (e.g. ``"best 0.913"``).
      force: log now whatever the time since the last line.

    Returns:
      The line logged, or None when none was due.
    """
    self.count += n
    now = self._clock()
    finished = self.total is not None and self.count >= self.total
    due = (force or finished or self._last_log is None or
           now - self._last_log >= self.every_seconds)
    if not due:
      return None
    self._last_log = now
    line = self.format_line(extra)
    logging.info("%s", line)
    return line

