"""Where offline data sets live.

Order: an explicit path, then ``$NAS_JAX_DATA_DIR``, then ``../shared/data``
beside the project's checkout (the development and CI layout).
"""

from __future__ import annotations

import os
import pathlib

ENV_VAR = "NAS_JAX_DATA_DIR"
_REPO = pathlib.Path(__file__).resolve().parents[2]


def data_dir(path: str | os.PathLike | None = None) -> pathlib.Path:
  if path:
    return pathlib.Path(path).expanduser()
  if os.environ.get(ENV_VAR):
    return pathlib.Path(os.environ[ENV_VAR]).expanduser()
  return (_REPO.parent / "shared" / "data").resolve()
