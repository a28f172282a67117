"""``nas_jax.host_memory``: freed host memory stays mapped between calls.

Each case runs in a fresh Python process, because the malloc settings are
process-wide and only take effect before XLA starts its threads.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from nas_jax import host_memory

pytestmark = pytest.mark.skipif(
    host_memory._glibc() is None, reason="needs Linux with glibc (mallopt)")

# A program whose scratch buffer holds a 64 MiB intermediate (a [4096, 4096]
# float32 matrix the second product reads), larger than any per-thread
# malloc arena can keep.
_PROGRAM = textwrap.dedent("""
    import json, resource, sys
    if sys.argv[1] == "late":
      import jax.numpy as jnp
      jnp.ones(3).block_until_ready()   # XLA's threads start first
    import nas_jax
    import jax, jax.numpy as jnp
    from nas_jax import host_memory

    @jax.jit
    def f(x, w1, w2):
      return jnp.sum(jnp.tanh(x @ w1) @ w2)

    x = jnp.ones((4096, 16)) * 0.01
    w1, w2 = jnp.ones((16, 4096)), jnp.ones((4096, 8))
    f(x, w1, w2).block_until_ready()
    f(x, w1, w2).block_until_ready()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
      out = f(x, w1, w2).block_until_ready()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 5
    print(json.dumps({"status": host_memory.status(),
                      "faults_per_call": faults, "out": float(out)}))
""")


def _run(mode: str, env_value: str | None) -> tuple[dict, str]:
  env = dict(os.environ)
  env.pop(host_memory.ENV, None)
  if env_value is not None:
    env[host_memory.ENV] = env_value
  proc = subprocess.run([sys.executable, "-c", _PROGRAM, mode],
                        capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_import_keeps_the_scratch_buffer_mapped_and_results_do_not_change():
  kept, _ = _run("early", None)
  plain, _ = _run("early", "0")
  assert kept["status"] == "applied"
  assert plain["status"] == "skipped: $NAS_JAX_KEEP_HOST_MEMORY is off"
  # 64 MiB of fresh pages is 16,384 faults a call with glibc's defaults;
  # kept, the buffer is reused and (almost) nothing faults.
  assert plain["faults_per_call"] > 8000, plain
  assert kept["faults_per_call"] < 1000, kept
  assert kept["out"] == plain["out"]


def test_importing_after_jax_ran_warns_how_to_fix_it():
  late, stderr = _run("late", None)
  assert late["status"] == "applied after XLA started"
  assert "import nas_jax before using JAX" in stderr
  assert "MALLOC_ARENA_MAX=1" in stderr
