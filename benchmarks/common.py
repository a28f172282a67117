"""Helpers shared by the benchmark scripts: machine information, the header
every script prints, and a first-call / steady-state timer.

The scripts import it as ``import common`` after putting their own folder on
``sys.path``, so they run both as ``python benchmarks/X.py`` and as
``PYTHONPATH=. python benchmarks/X.py`` from the repository root. Importing
it turns JAX's persistent compilation cache on (``nas_jax.compile_cache``;
``NAS_JAX_COMPILE_CACHE=off`` for cold first calls, or a directory).
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import time

import jax

from nas_jax import compile_cache
from nas_jax import host_memory

COMPILE_CACHE = compile_cache.enable()

# An extra header line for scripts whose figures are wall-clock timings.
WALL_CLOCK_NOTE = ("note:    timings are wall-clock (the load above is the "
                   "1-minute load average at start)")


def cpu_name() -> str:
  """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def load_average() -> float | None:
  """The 1-minute load average (2 decimals), or None where unavailable."""
  try:
    return round(os.getloadavg()[0], 2)
  except (AttributeError, OSError):
    return None


def machine_info() -> dict:
  return {
      "date": datetime.datetime.now(datetime.timezone.utc).strftime(
          "%Y-%m-%d %H:%M:%S UTC"),
      "cpu": cpu_name(),
      "cpu_count": os.cpu_count(),
      "platform": platform.platform(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "devices": [str(d) for d in jax.devices()],
      "load_average_1m": load_average(),
      "compile_cache": str(COMPILE_CACHE) if COMPILE_CACHE else "off",
      "host_memory": host_memory.status(),
  }


def minor_faults() -> int:
  """This process's minor page faults so far (``getrusage``): a program
  whose scratch memory comes back fresh from the kernel every call faults
  tens of thousands of times per call (``nas_jax.host_memory``)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def print_header(info: dict, extra_lines=()):
  """Prints the date, machine (CPU, count, 1-min load at start) and jax /
  devices lines, then ``extra_lines``, one a line."""
  load = info["load_average_1m"]
  load = "n/a" if load is None else f"{load:.2f}"
  print(f"date:    {info['date']}")
  print(f"machine: {info['cpu']} ({info['cpu_count']} CPUs, 1-min load "
        f"{load} at start), {info['platform']}")
  print(f"jax:     {info['jax']}, devices {', '.join(info['devices'])}, "
        f"compilation cache {info.get('compile_cache', 'off')}, "
        f"host memory kept: {info.get('host_memory', 'n/a')}")
  for line in extra_lines:
    print(line)
  print(end="", flush=True)


def time_first_and_repeats(fn, args, repeats: int):
  """Calls ``fn(*args)`` once (compile included), then ``repeats`` more times.
  Returns (first result, first call's seconds, list of the repeats' seconds),
  every call ended by ``jax.block_until_ready``."""
  t0 = time.perf_counter()
  result = jax.block_until_ready(fn(*args))
  first_s = time.perf_counter() - t0
  steady = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    steady.append(time.perf_counter() - t0)
  return result, first_s, steady


def text_table(head, rows) -> str:
  """A plain-text table: ``head`` and each row joined with " | ", columns
  padded to their widest cell, a "-+-" rule under the head."""
  widths = [max(len(str(r[i])) for r in [head] + list(rows))
            for i in range(len(head))]
  fmt = lambda row: " | ".join(str(c).ljust(w) for c, w in zip(row, widths))
  return "\n".join([fmt(head), "-+-".join("-" * w for w in widths)]
                   + [fmt(r) for r in rows])


def parse_algorithm_names(parser, text: str, known, aliases) -> list[str]:
  """The comma list ``text`` of algorithm names, lower-cased and with
  ``aliases`` resolved; an unknown name is a ``parser.error``."""
  names = []
  for n in text.split(","):
    n = aliases.get(n.strip().lower(), n.strip().lower())
    if n and n not in known:
      parser.error(f"unknown algorithm {n!r}; choose from {', '.join(known)}")
    if n:
      names.append(n)
  return names
