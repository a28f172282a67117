"""Search algorithms as NamedTuples of pure init/propose/feedback functions."""
from nas_jax.algorithms.base import Algorithm, controller_optimizer
from nas_jax.algorithms.evolution import regularized_evolution
from nas_jax.algorithms.pnas import pnas
from nas_jax.algorithms.ppo import ppo
from nas_jax.algorithms.q_learning import q_learning
from nas_jax.algorithms.random_search import random_search
from nas_jax.algorithms.reinforce import reinforce
