"""Controllers: the LSTM policy shared by every space, and a factorised one.

``make_controller(space, policy="lstm", **kwargs)`` builds either; both return
the same :class:`Controller` of pure functions.
"""
from nas_jax.controllers.factorized import (FactorizedPolicy,
                                            make_factorized_controller)
from nas_jax.controllers.lstm_policy import (Controller, LSTMPolicy, Rollout,
                                             SpaceArrays)
from nas_jax.controllers.lstm_policy import \
    make_controller as make_lstm_controller

POLICIES = ("lstm", "factorized")


def make_controller(space, policy: str = "lstm", **kwargs) -> Controller:
  """``policy="lstm"``: the autoregressive LSTM (``lstm_policy``; kwargs of
  ``LSTMPolicy``); ``"factorized"``: independent per-decision softmaxes
  (``factorized``; kwargs ``init_scale``, ``temperature``)."""
  if policy == "lstm":
    return make_lstm_controller(space, **kwargs)
  if policy == "factorized":
    return make_factorized_controller(space, **kwargs)
  raise ValueError(f"controller.policy must be one of {POLICIES}, got "
                   f"{policy!r}")
