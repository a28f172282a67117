"""nas_jax: reinforcement-learning neural architecture search in JAX.

Importing the package keeps freed host memory mapped (``host_memory``): XLA:CPU
otherwise page-faults through every call's scratch buffer. It has to happen
before XLA starts its threads, hence here; ``NAS_JAX_KEEP_HOST_MEMORY=0``
turns it off.
"""

from nas_jax import host_memory as _host_memory

_host_memory.keep_freed_memory()
