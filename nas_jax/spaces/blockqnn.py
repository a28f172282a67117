"""The Block-QNN block code space (Zhong et al., AAAI 2018 / CVPR 2018,
Table 1; seed 000).

A block is built layer by layer. Layer ``i`` (1-based; index 0 is the block's
input) is a layer type and two predecessor indices ``K < i``:

======================  ==============  ============  ============
layer type              kernel sizes    connection 1  connection 2
======================  ==============  ============  ============
convolution             1, 3, 5         K             -
max pooling             1, 3            K             -
average pooling         1, 3            K             -
identity                -               K             -
elemental add           -               K             K
concat                  -               K             K
terminal                -               (K)           -
======================  ==============  ============  ============

Each layer is three decisions: ``layer{i}/type`` (the 11 type/kernel codes),
``layer{i}/input1`` and ``layer{i}/input2`` (pointers to layers ``0..i-1``).
Connection 2 is read only by add and concat; a terminal layer ends the block
and the layers after it are not part of it (every constraint stays a range,
so uniform sampling and Q-learning need no rejection). ``max_layers`` is the
maximum depth; a block that never chooses terminal ends at it.
"""

from __future__ import annotations

from nas_jax.spaces import base

TYPES = ("conv_1", "conv_3", "conv_5", "max_pool_1", "max_pool_3",
         "avg_pool_1", "avg_pool_3", "identity", "add", "concat", "terminal")
TWO_INPUTS = ("add", "concat")
TERMINAL = TYPES.index("terminal")


def space(max_layers: int = 10) -> base.SearchSpace:
  """The block space with at most ``max_layers`` layers (3 decisions each)."""
  if (not isinstance(max_layers, int) or isinstance(max_layers, bool)
      or max_layers < 1):
    raise ValueError(f"blockqnn max_layers must be a positive int, got "
                     f"{max_layers!r}")
  decisions = []
  for i in range(1, max_layers + 1):
    decisions += [
        base.Decision(name=f"layer{i}/type", choices=TYPES,
                      group="blockqnn_type"),
        base.Decision(name=f"layer{i}/input1", kind=base.POINTER,
                      num_inputs=i, anchor_base=0),
        # The layer's state is written after its last decision, so later
        # layers' pointers can attend to it.
        base.Decision(name=f"layer{i}/input2", kind=base.POINTER,
                      num_inputs=i, anchor_base=0, anchor=i),
    ]
  return base.SearchSpace("blockqnn", decisions, init_anchors=(0,))


def to_layers(space_: base.SearchSpace, arch) -> list[tuple[str, int, int]]:
  """The block's layers up to (not including) the first terminal, as
  ``(type, input1, input2)``; ``input2`` is -1 for one-input types."""
  a = space_.validate(arch)
  layers = []
  for i in range(len(a) // 3):
    kind, in1, in2 = (int(v) for v in a[3 * i:3 * i + 3])
    if kind == TERMINAL:
      break
    layers.append((TYPES[kind], in1, in2 if TYPES[kind] in TWO_INPUTS
                   else -1))
  return layers
