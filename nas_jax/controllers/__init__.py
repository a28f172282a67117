"""Controllers: the LSTM policy shared by every space."""
from nas_jax.controllers.lstm_policy import (Controller, LSTMPolicy, Rollout,
                                             SpaceArrays, make_controller)
