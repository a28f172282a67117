"""JAX's persistent compilation cache for the binaries and benchmarks.

Compiling, not running, dominates a small search (a controller search's
first call compiles for seconds on a quiet 2-core machine and for minutes on a
loaded one). With the cache, a second run, a resume or another seed of the
same config loads the compiled programs from disk instead.

Where the cache lives, first match wins:

1. ``enable(path)`` / the binary's ``--compile_cache=PATH``;
2. ``$NAS_JAX_COMPILE_CACHE``;
3. ``$XDG_CACHE_HOME/nas_jax/jax_compile`` (default ``~/.cache/...``).

``off`` (or ``0``, ``none``, ``false``) in place of a path turns it off.
Importing this module in an absl binary (``experiments/main.py`` does)
defines ``--compile_cache`` and enables the cache once flags are parsed,
before ``main`` runs and before anything compiles; the module imports JAX
only then, so the import itself is cheap. An unwritable directory is a
warning, never an error: the run just compiles as before.
"""

from __future__ import annotations

import os
import pathlib

from absl import app, flags, logging

ENV = "NAS_JAX_COMPILE_CACHE"
_OFF = ("off", "0", "none", "false", "no")
# Programs that compile faster than this are not worth a disk round trip.
MIN_COMPILE_SECONDS = 0.1

_FLAG = flags.DEFINE_string(
    "compile_cache", None,
    f"Directory of JAX's persistent compilation cache, or 'off'. Default: "
    f"${ENV}, else $XDG_CACHE_HOME/nas_jax/jax_compile.")


def default_dir() -> pathlib.Path:
  """``$XDG_CACHE_HOME/nas_jax/jax_compile`` (``~/.cache`` by default)."""
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return pathlib.Path(root) / "nas_jax" / "jax_compile"


def resolve(path: str | os.PathLike | None = None) -> pathlib.Path | None:
  """The cache directory ``enable`` would use, or None when turned off."""
  for value in (path, os.environ.get(ENV)):
    if value is not None and str(value).strip() != "":
      if str(value).strip().lower() in _OFF:
        return None
      return pathlib.Path(value).expanduser()
  return default_dir()


def enable(path: str | os.PathLike | None = None) -> pathlib.Path | None:
  """Turns JAX's persistent compilation cache on (see module doc).

  Returns the directory in use, or None when it is off or unusable.
  """
  import jax  # here, so that importing this module (a binary's flag) is cheap
  directory = resolve(path)
  if directory is None:
    jax.config.update("jax_compilation_cache_dir", None)
    logging.info("persistent compilation cache off")
    return None
  try:
    directory.mkdir(parents=True, exist_ok=True)
    if not os.access(directory, os.W_OK):
      raise PermissionError(f"{directory} is not writable")
  except OSError as e:
    logging.warning("compilation cache disabled: cannot use %s (%s); set $%s "
                    "or --compile_cache to a writable directory, or 'off'",
                    directory, e, ENV)
    return None
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    MIN_COMPILE_SECONDS)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  logging.info("persistent compilation cache: %s", directory)
  return directory


def _enable_from_flag():
  enable(_FLAG.value)


app.call_after_init(_enable_from_flag)
