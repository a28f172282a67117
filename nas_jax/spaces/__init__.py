"""Search spaces: each is an ordered list of decisions (see base.py)."""
from nas_jax.spaces.base import (OP, POINTER, SKIP, Decision,
                                 InvalidArchitectureError, SearchSpace)
