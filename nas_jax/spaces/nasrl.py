"""The NAS-RL convolutional network space (Zoph & Le, "Neural Architecture
Search with Reinforcement Learning", ICLR 2017).

The controller emits a plain CNN layer by layer (Sec. 3.1): for each layer a
filter height, a filter width, a number of filters and (optionally) a stride,
each from its own softmax. With skip connections (Sec. 3.3), every layer ``i``
then gets an "anchor point" with one sigmoid per earlier layer ``j < i``
deciding whether ``j`` is one of ``i``'s inputs. The value sets are those of
the CIFAR-10 experiments (Sec. 4.1).

The text form and spec are the base class's; labels are the values as
strings (e.g. ``"layer0/filter_height": "3"``), and the int constants below
are for the child-network builder.
"""

from __future__ import annotations

from nas_jax.spaces import base

# Sec. 4.1: the value sets of the CIFAR-10 search.
FILTER_SIZES = (1, 3, 5, 7)
NUM_FILTERS = (24, 36, 48, 64)
STRIDES = (1, 2, 3)

# OP decisions carry string labels, so specs read like the paper's tables.
FILTER_SIZE_CHOICES = tuple(str(v) for v in FILTER_SIZES)
NUM_FILTERS_CHOICES = tuple(str(v) for v in NUM_FILTERS)
STRIDE_CHOICES = tuple(str(v) for v in STRIDES)


def _layer(i: int, search_strides: bool,
           skip_connections: bool) -> list[base.Decision]:
  """The decisions of layer ``i``: its hyperparameters, then its skip bits."""
  params = [("filter_height", FILTER_SIZE_CHOICES),
            ("filter_width", FILTER_SIZE_CHOICES),
            ("num_filters", NUM_FILTERS_CHOICES)]
  if search_strides:
    params.append(("stride", STRIDE_CHOICES))
  decisions = []
  for k, (param, choices) in enumerate(params):
    # The state after the layer's last hyperparameter is the layer's anchor
    # point: later layers' skip sigmoids compare against it (Sec. 3.3).
    last = k == len(params) - 1
    # group=None: NAS-RL has a separate softmax per prediction (Sec. 3.1).
    decisions.append(base.Decision(
        name=f"layer{i}/{param}", choices=choices, anchor=i if last else -1))
  if skip_connections:
    decisions += [
        base.Decision(name=f"layer{i}/skip_from{j}", kind=base.SKIP, target=j)
        for j in range(i)
    ]
  return decisions


def space(num_layers: int = 6, search_strides: bool = True,
          skip_connections: bool = True) -> base.SearchSpace:
  """The NAS-RL CNN space (Zoph & Le 2017, Sec. 3.1 and 3.3).

  Args:
    num_layers: the number of conv layers. The paper deepens the children
      on a schedule during the search (Sec. 4.1); a space has a fixed depth,
      so a schedule is a sequence of spaces.
    search_strides: whether each layer also picks a stride from ``STRIDES``
      (the paper's "predicting strides" variant, Sec. 4.1); without it all
      strides are 1.
    skip_connections: whether layers pick skip connections from every earlier
      layer (Sec. 3.3).

  Returns:
    A space of ``num_layers * (3 + search_strides)`` hyperparameter decisions
    plus ``num_layers * (num_layers - 1) / 2`` skip bits if enabled.
  """
  if (not isinstance(num_layers, int) or isinstance(num_layers, bool)
      or num_layers < 1):
    raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
  decisions = []
  for i in range(num_layers):
    decisions += _layer(i, bool(search_strides), bool(skip_connections))
  return base.SearchSpace("nasrl", decisions)
