"""Search spaces by name, for configs and command lines.

``get("enas_micro", num_nodes=5)`` builds a space from its family's factory;
keyword arguments go to the factory unchanged.

Your own space registers under a name with :func:`register`, either a space
object or a factory (a function returning one, used as a decorator)::

    from nas_jax.spaces import Decision, SearchSpace, registry

    @registry.register("three_layers")
    def three_layers(width=3):
      return SearchSpace("three_layers", [
          Decision(f"layer{i}", choices=tuple(f"op{j}" for j in range(width)))
          for i in range(3)])

    registry.get("three_layers", width=2)   # 2 ** 3 = 8 architectures

A config names the space (``config.space = "three_layers"``,
``config.space_kwargs = {...}``); the module that registers it must be
imported first, e.g. by the config file itself.
"""

from __future__ import annotations

from typing import Any, Callable

from nas_jax.spaces import (base, blockqnn, enas, nasbench201, nasnet, nasrl,
                            seed003)
from nas_jax.spaces import nasrl_rnn

_BUILTIN: dict[str, Callable[..., base.SearchSpace]] = {
    "nasbench201": nasbench201.space,
    "enas_micro": enas.micro_space,
    "enas_macro": enas.macro_space,
    "enas_rnn": enas.rnn_space,
    "nasnet": nasnet.space,
    "nasrl": nasrl.space,
    "nasrl_rnn": nasrl_rnn.space,
    "seed003_small": seed003.small_space,
    "seed003_large": seed003.large_space,
    "blockqnn": blockqnn.space,
}
_FACTORIES: dict[str, Callable[..., base.SearchSpace]] = dict(_BUILTIN)


def names() -> tuple[str, ...]:
  """The registered space names, in registration order."""
  return tuple(_FACTORIES)


def _identity(factory) -> tuple | None:
  """What makes two registrations the same one (a config file run again):
  a fixed space's class and structure, or a factory's module and name."""
  fixed = getattr(factory, "_fixed_space", None)
  if fixed is not None:
    return (type(fixed).__module__, type(fixed).__qualname__, fixed.name,
            fixed.decisions, fixed.init_anchors)
  module = getattr(factory, "__module__", None)
  qualname = getattr(factory, "__qualname__", None)
  return None if module is None or qualname is None else (module, qualname)


def register(name: str, space_or_factory: Any = None, *,
             overwrite: bool = False):
  """Registers a space under ``name`` for :func:`get` and configs.

  Args:
    name: the name configs use (``config.space``).
    space_or_factory: a :class:`~nas_jax.spaces.base.SearchSpace` (``get``
      then returns it and takes no keyword arguments) or a function
      ``(**kwargs) -> SearchSpace``. Omitted: returns a decorator for a
      factory.
    overwrite: replace a space already registered under ``name``. Without it,
      re-registering a factory of the same module and name (a config file
      executed again) replaces it; anything else raises.

  Returns:
    ``space_or_factory`` (or the decorator).

  Raises:
    ValueError: ``name`` is not a non-empty str, is taken (the message says to
      pass ``overwrite=True`` or choose another name), or the object is
      neither a space nor callable.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"a space name is a non-empty str, got {name!r}")
  if space_or_factory is None:
    return lambda factory: register(name, factory, overwrite=overwrite)
  if isinstance(space_or_factory, base.SearchSpace):
    space = space_or_factory

    def factory(**kwargs):
      if kwargs:
        raise ValueError(
            f"space {name!r} was registered as a fixed space and takes no "
            f"arguments, got {sorted(kwargs)}; register a factory function "
            "to build it from arguments")
      return space
    factory._fixed_space = space
  elif callable(space_or_factory):
    factory = space_or_factory
  else:
    raise ValueError(
        f"register({name!r}, ...) takes a SearchSpace or a function returning "
        f"one, got {type(space_or_factory).__name__}")
  old = _FACTORIES.get(name)
  if old is not None and not overwrite:
    builtin = old is _BUILTIN.get(name)
    if builtin or _identity(old) is None or _identity(old) != _identity(
        factory):
      raise ValueError(
          f"search space {name!r} is already registered"
          f"{' (built in)' if builtin else ''}; choose another name or pass "
          "overwrite=True")
  _FACTORIES[name] = factory
  return space_or_factory


def unregister(name: str) -> None:
  """Removes a space registered with :func:`register` (built-in spaces stay)."""
  if name in _BUILTIN and _FACTORIES.get(name) is _BUILTIN[name]:
    raise ValueError(f"{name!r} is a built-in space and cannot be removed")
  _FACTORIES.pop(name, None)
  if name in _BUILTIN:  # an overwritten built-in comes back
    _FACTORIES[name] = _BUILTIN[name]


def get(name: str, **kwargs: Any) -> base.SearchSpace:
  """Builds the space registered as ``name`` with the factory's ``kwargs``.

  Raises:
    ValueError: ``name`` is not registered (the message lists known names and
      how to register one), or the factory does not return a SearchSpace.
  """
  try:
    factory = _FACTORIES[name]
  except (KeyError, TypeError):
    raise ValueError(
        f"unknown search space {name!r}; known spaces: "
        f"{', '.join(names())}. Register your own with "
        "nas_jax.spaces.registry.register(name, space_or_factory), in a module "
        "your config file imports") from None
  space = factory(**kwargs)
  if not isinstance(space, base.SearchSpace):
    raise ValueError(
        f"the factory registered as {name!r} returned "
        f"{type(space).__name__}, not a nas_jax.spaces.SearchSpace")
  return space
