"""Every ```python block of README.md and WORKSPACE.md runs as written.

Each block is executed on its own, in a fresh namespace, so a block must be
complete (its imports and every name it uses); a block that is a config file
must also build its config. Spaces a block registers are removed
afterwards, so blocks cannot depend on each other's registrations.
"""

from __future__ import annotations

import pathlib
import re

import pytest

from nas_jax.spaces import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ("README.md", "WORKSPACE.md")
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def python_blocks(text: str) -> list[tuple[int, str]]:
  """``(first line number, code)`` of every ```python block in ``text``."""
  return [(text.count("\n", 0, m.start()) + 2, m.group(1))
          for m in _BLOCK.finditer(text)]


BLOCKS = [(f"{name}:{line}", code) for name in DOCS
          for line, code in python_blocks((ROOT / name).read_text())]


def test_blocks_are_found():
  text = "intro\n```python\nx = 1\n```\n\n```bash\nls\n```\n```python\ny\n```\n"
  assert python_blocks(text) == [(3, "x = 1\n"), (10, "y\n")]
  assert len(BLOCKS) >= 4  # README 1, WORKSPACE: reuse, ask/tell, own space


@pytest.mark.parametrize("where,code", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_doc_block_runs(where, code, monkeypatch, tmp_path):
  # Blocks run "from the repository root" (they may read experiments/...),
  # but the files they write land in a temporary directory.
  (tmp_path / "experiments").symlink_to(ROOT / "experiments")
  monkeypatch.chdir(tmp_path)
  before = dict(registry._FACTORIES)
  namespace = {"__name__": "__doc_block__"}
  try:
    exec(compile(code, where, "exec"), namespace)
    if callable(namespace.get("get_config")):  # a config file: it builds
      assert namespace["get_config"]().get("run")
  finally:
    registry._FACTORIES.clear()
    registry._FACTORIES.update(before)
