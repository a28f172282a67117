"""Search spaces by name, for configs and command lines.

``get("enas_micro", num_nodes=5)`` builds a space from its family's factory;
keyword arguments go to the factory unchanged.
"""

from __future__ import annotations

from typing import Any, Callable

from nas_jax.spaces import base, enas, nasbench201, nasnet, nasrl, seed003
from nas_jax.spaces import nasrl_rnn

_FACTORIES: dict[str, Callable[..., base.SearchSpace]] = {
    "nasbench201": nasbench201.space,
    "enas_micro": enas.micro_space,
    "enas_macro": enas.macro_space,
    "enas_rnn": enas.rnn_space,
    "nasnet": nasnet.space,
    "nasrl": nasrl.space,
    "nasrl_rnn": nasrl_rnn.space,
    "seed003_small": seed003.small_space,
    "seed003_large": seed003.large_space,
}


def names() -> tuple[str, ...]:
  """The registered space names, in registration order."""
  return tuple(_FACTORIES)


def get(name: str, **kwargs: Any) -> base.SearchSpace:
  """Builds the space registered as ``name`` with the factory's ``kwargs``.

  Raises:
    ValueError: ``name`` is not registered (the message lists known names).
  """
  try:
    factory = _FACTORIES[name]
  except (KeyError, TypeError):
    raise ValueError(
        f"unknown search space {name!r}; known spaces: "
        f"{', '.join(names())}") from None
  return factory(**kwargs)
