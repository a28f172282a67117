"""Golden values, computed by hand, for the policy-gradient losses on a
2-decision toy policy with logits theta1 (2 choices) and theta2 (2 choices):

  log P(a) = log_softmax(theta1)[a1] + log_softmax(theta2)[a2]
  d log softmax(theta)[a] / d theta = onehot(a) - softmax(theta)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.algorithms import losses

LN3 = np.log(3.0)


def toy_log_prob(theta, arch):
  return (jax.nn.log_softmax(theta["d1"])[arch[0]]
          + jax.nn.log_softmax(theta["d2"])[arch[1]])


THETA = {"d1": jnp.array([0.0, LN3]), "d2": jnp.array([0.0, 0.0])}
# softmax(d1) = [1/4, 3/4], softmax(d2) = [1/2, 1/2]


def test_reinforce_single_stream_golden():
  arch, adv = jnp.array([1, 0]), 2.0
  f = lambda th: losses.reinforce_loss(toy_log_prob(th, arch), jnp.array(adv))
  # L = -2 (ln 3/4 + ln 1/2) = 1.9616585
  np.testing.assert_allclose(jax.jit(f)(THETA), 1.9616585, rtol=1e-6)
  g = jax.grad(f)(THETA)
  # -A (onehot - p): d1: -2([0,1] - [.25,.75]) = [.5,-.5]; d2: [-1, 1]
  np.testing.assert_allclose(g["d1"], [0.5, -0.5], atol=1e-6)
  np.testing.assert_allclose(g["d2"], [-1.0, 1.0], atol=1e-6)


def test_reinforce_batch_with_baseline_golden():
  """1/m sum_k sum_t grad log P (R_k - b), m = 2, R = [.9, .5], b = .6."""
  archs = jnp.array([[1, 0], [0, 1]])
  adv = jnp.array([0.9, 0.5]) - 0.6  # [0.3, -0.1]

  def f(th):
    lp = jax.vmap(toy_log_prob, (None, 0))(th, archs)
    return jnp.mean(jax.vmap(losses.reinforce_loss)(lp, adv))

  # L = -(0.3 (ln .75 + ln .5) - 0.1 (ln .25 + ln .5)) / 2
  want = -(0.3 * (np.log(.75) + np.log(.5))
           - 0.1 * (np.log(.25) + np.log(.5))) / 2
  np.testing.assert_allclose(want, 0.0431523, rtol=1e-5)
  np.testing.assert_allclose(f(THETA), 0.0431523, rtol=1e-5)
  g = jax.grad(f)(THETA)
  # d1: -(0.3[-.25,.25] - 0.1[.75,-.75]) / 2 = [0.075, -0.075]
  # d2: -(0.3[.5,-.5] - 0.1[-.5,.5]) / 2 = [-0.1, 0.1]
  np.testing.assert_allclose(g["d1"], [0.075, -0.075], atol=1e-6)
  np.testing.assert_allclose(g["d2"], [-0.1, 0.1], atol=1e-6)


def test_reinforce_advantage_is_not_differentiated():
  g = jax.grad(lambda a: losses.reinforce_loss(jnp.array(-1.0), a))(2.0)
  assert float(g) == 0.0


# New policy: d1 logits [0, ln 9] -> p1 = [.1, .9]; P(a=[1,0]) = .45.
# Old P(a) = .375, so ratio = 1.2.
NEW = {"d1": jnp.array([0.0, np.log(9.0)]), "d2": jnp.array([0.0, 0.0])}
OLD_LP = np.log(0.375)


@pytest.mark.parametrize("adv,eps,want_loss,want_g1,want_g2", [
    # A>0, ratio above 1+eps: clipped, loss -1.1 A, no gradient.
    (1.0, 0.1, -1.1, [0.0, 0.0], [0.0, 0.0]),
    # A<0: min picks the unclipped -1.2; L = 1.2, dL = 1.2 (onehot - p).
    (-1.0, 0.1, 1.2, [-0.12, 0.12], [0.6, -0.6]),
    # eps wide enough: unclipped, L = -1.2 A, dL = -1.2 A (onehot - p).
    (0.5, 0.3, -0.6, [0.06, -0.06], [-0.3, 0.3]),
])
def test_ppo_clip_loss_golden(adv, eps, want_loss, want_g1, want_g2):
  arch = jnp.array([1, 0])
  f = lambda th: losses.ppo_clip_loss(toy_log_prob(th, arch),
                                      jnp.array(OLD_LP), jnp.array(adv), eps)
  np.testing.assert_allclose(jax.jit(f)(NEW), want_loss, rtol=1e-5)
  g = jax.grad(f)(NEW)
  np.testing.assert_allclose(g["d1"], want_g1, atol=1e-5)
  np.testing.assert_allclose(g["d2"], want_g2, atol=1e-5)


def test_ppo_equals_reinforce_at_ratio_one():
  arch, adv = jnp.array([1, 1]), jnp.array(0.7)
  lp_old = toy_log_prob(THETA, arch)
  g_ppo = jax.grad(lambda th: losses.ppo_clip_loss(
      toy_log_prob(th, arch), lp_old, adv, 0.2))(THETA)
  g_pg = jax.grad(lambda th: losses.reinforce_loss(
      toy_log_prob(th, arch), adv))(THETA)
  for k in THETA:
    np.testing.assert_allclose(g_ppo[k], g_pg[k], atol=1e-6)


def test_losses_check_rank():
  with pytest.raises(AssertionError):
    losses.reinforce_loss(jnp.zeros(3), jnp.zeros(3))


def test_ema_golden():
  np.testing.assert_allclose(losses.ema(0.5, 0.9, 0.95), 0.52, rtol=1e-6)
