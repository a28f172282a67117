"""The Block-QNN block code space (Table 1 of seed 000) and Q-learning's
layer-by-layer agent on it."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.spaces import InvalidArchitectureError, blockqnn, registry
from nas_jax.train import search as search_lib

q_learning = importlib.import_module("nas_jax.algorithms.q_learning")


def test_table1_codes_and_layers():
  space = registry.get("blockqnn", max_layers=3)
  assert space.num_decisions == 9
  # Per layer i: 11 type codes, then two predecessors K < i.
  np.testing.assert_array_equal(space.num_choices,
                                [11, 1, 1, 11, 2, 2, 11, 3, 3])
  assert blockqnn.TYPES[:3] == ("conv_1", "conv_3", "conv_5")
  conv1, add, term = 0, blockqnn.TYPES.index("add"), blockqnn.TERMINAL
  # conv 1x1 on the input; add(input, layer 1); terminal; connection 2 of a
  # one-input layer is not part of the block.
  arch = [conv1, 0, 0, add, 0, 1, term, 2, 1]
  assert blockqnn.to_layers(space, arch) == [("conv_1", 0, -1),
                                             ("add", 0, 1)]
  assert blockqnn.to_layers(space, [term, 0, 0] + arch[3:]) == []
  assert len(blockqnn.to_layers(space, [conv1, 0, 0] * 1 + [1, 1, 0,
                                                            2, 2, 2])) == 3


def test_invalid_block_codes_are_clear_errors():
  space = registry.get("blockqnn", max_layers=2)
  # Layer 1 can only read the block input (K < 1).
  with pytest.raises(InvalidArchitectureError,
                     match=r"'layer1/input1'.*out of range; allowed 0..0"):
    space.validate([0, 1, 0, 0, 0, 0])
  with pytest.raises(InvalidArchitectureError,
                     match="unknown choice 'conv_7'"):
    space.from_spec({"choices": {
        "layer1/type": "conv_7", "layer1/input1": 0, "layer1/input2": 0,
        "layer2/type": "terminal", "layer2/input1": 0, "layer2/input2": 0}})
  with pytest.raises(ValueError, match="max_layers must be a positive int"):
    blockqnn.space(0)


def test_q_learning_agent_builds_blocks_layer_by_layer():
  space = blockqnn.space(max_layers=3)
  conv3 = blockqnn.TYPES.index("conv_3")

  def evaluate(archs):  # [m, 9]: the share of layers that are conv 3x3
    return jnp.mean(archs[:, ::3] == conv3, axis=1)

  algo = q_learning.q_learning(space, learning_rate=0.3, explore_episodes=50,
                               decay_episodes=100, replay_samples=20)
  search = jax.jit(jax.vmap(search_lib.make_search(algo, evaluate,
                                                   max_evals=300)))
  result = search(jax.random.split(jax.random.key(0), 2))
  assert bool(jnp.all(jax.vmap(jax.vmap(space.is_valid))(result.archs)))
  greedy = jax.vmap(lambda s: q_learning.greedy(space, s))(result.state)
  assert bool(jnp.all(jax.vmap(space.is_valid)(greedy)))
  np.testing.assert_array_equal(greedy[:, ::3], conv3)


def test_pnas_grows_blocks_layer_decision_by_decision():
  pnas = importlib.import_module("nas_jax.algorithms.pnas")
  space = blockqnn.space(max_layers=2)
  conv3 = blockqnn.TYPES.index("conv_3")
  algo = pnas.pnas(space, beam_size=11, fit_steps=20,
                   surrogate=dict(kind="mlp", ensemble_size=2))
  search = jax.jit(jax.vmap(search_lib.make_search(
      algo, lambda a: jnp.mean(a[:, ::3] == conv3, axis=1), max_evals=66)))
  result = search(jax.random.split(jax.random.key(0), 2))
  assert bool(jnp.all(jax.vmap(jax.vmap(space.is_valid))(result.archs)))
  # The first round is the 11 one-decision cells: every layer-1 type.
  np.testing.assert_array_equal(np.sort(result.archs[:, :11, 0], axis=1),
                                np.tile(np.arange(11), (2, 1)))
  np.testing.assert_allclose(result.best_reward, 1.0)
