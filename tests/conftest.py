"""Test-wide settings, applied before JAX initialises.

Compiling, not running, dominates this suite on a 2-core CPU, so XLA's
backend optimisation is lowered (``NAS_JAX_TEST_FAST_COMPILE=0`` turns this
off). It changes compile time and float rounding only, never semantics.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if os.environ.get("NAS_JAX_TEST_FAST_COMPILE", "1") != "0":
  flag = "--xla_backend_optimization_level=0"
  if flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " +
                               flag).strip()
