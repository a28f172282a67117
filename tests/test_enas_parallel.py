"""The ENAS shared-weight step on 8 fake CPU devices (a subprocess): the
data-parallel step equals one device; the per-device variant trains 8
different children per step with the device-mean gradient; the loop runs
with 8 children per step."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
_MARK = "RESULT_JSON "

_SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np, optax
from experiments.configs import enas_micro
from nas_jax.parallel import mesh as mesh_lib
from nas_jax.train import enas, enas_run

assert jax.device_count() == 8
c = enas_micro.get_config("tiny")
c.shared.grad_clip = 0.0      # keep the update linear in the gradient
c.shared.weight_decay = 0.0
space, ds, net, task1, algo = enas_run.build(c)
mesh = mesh_lib.make_mesh()
tx = optax.sgd(0.1)
kw = dict(batch_size=32, val_batch_size=32, tx=tx, seed=0)
single = enas_run.make_image_task(space, net, ds, **kw)
dp = enas_run.make_image_task(space, net, ds, mesh=mesh, **kw)
pd = enas_run.make_image_task(space, net, ds, mesh=mesh, per_device=True,
                              **kw)
out = {}
state = jax.jit(single.init)(jax.random.key(0))
arch = space.sample_uniform(jax.random.key(1))
key = jax.random.key(2)

# 1. Data parallel (GSPMD) == one device.
s1, m1 = jax.jit(single.train_step)(state, arch, single.train_batch(0, 0), key)
s8, m8 = jax.jit(dp.train_step)(state, arch, dp.train_batch(0, 0), key)
out["dp_max_diff"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
    jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)))
out["dp_moved"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
    jax.tree.leaves(s1.params), jax.tree.leaves(state.params)))
out["dp_loss"] = [float(m1["loss"]), float(m8["loss"])]

# 2. Per-device children: 8 different archs, the device-mean gradient.
steps = enas.make_steps(pd, algo, children_per_step=8)
ctrl = jax.jit(algo.init)(jax.random.key(3))
archs = steps.sample(ctrl, jax.random.key(4))
out["distinct"] = len({np.asarray(a).tobytes() for a in archs})
batch = single.train_batch(0, 0)
sp, mp = jax.jit(pd.train_step)(state, archs, pd.train_batch(0, 0), key)
loss_fn = enas_run.image_loss(net, ds)
grads, losses = [], []
for d in range(8):
  shard = jax.tree.map(lambda x: x[4 * d:4 * (d + 1)], batch)
  (l, _), g = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
      state.params, state.batch_stats, archs[d], shard,
      jax.random.fold_in(key, d))
  grads.append(g)
  losses.append(float(l))
mean_g = jax.tree.map(lambda *g: sum(g) / 8, *grads)
upd, _ = tx.update(mean_g, tx.init(state.params), state.params)
ref = optax.apply_updates(state.params, upd)
out["pd_max_diff"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
    jax.tree.leaves(sp.params), jax.tree.leaves(ref)))
out["pd_loss"] = [float(mp["loss"]), float(np.mean(losses))]
# Each device's child really differs: one child for all gives another update.
same = jnp.broadcast_to(archs[0], archs.shape)
s_same, _ = jax.jit(pd.train_step)(state, same, pd.train_batch(0, 0), key)
out["pd_vs_same"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
    jax.tree.leaves(sp.params), jax.tree.leaves(s_same.params)))

# 3. The loop with 8 children per step.
res = enas.run_enas(pd, algo, jax.random.key(5), num_epochs=1,
                    controller_steps=1, children_per_step=8)
out["loop_distinct"] = res.epochs[0]["shared/distinct_children"]
out["loop_steps"] = int(res.state.shared.step)
print("RESULT_JSON " + json.dumps(out))
"""


def test_eight_devices_data_parallel_and_per_device_children():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
             XLA_FLAGS=("--xla_force_host_platform_device_count=8"
                        " --xla_backend_optimization_level=0"))
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_SCRIPT)],
                        env=env, cwd=ROOT, capture_output=True, text=True,
                        timeout=900)
  lines = [l for l in proc.stdout.splitlines() if l.startswith(_MARK)]
  assert proc.returncode == 0 and lines, proc.stderr[-4000:]
  r = json.loads(lines[-1][len(_MARK):])
  assert r["dp_moved"] > 1e-4
  assert r["dp_max_diff"] < 1e-5
  assert abs(r["dp_loss"][0] - r["dp_loss"][1]) < 1e-5
  assert r["distinct"] == 8
  assert r["pd_max_diff"] < 1e-5
  assert abs(r["pd_loss"][0] - r["pd_loss"][1]) < 1e-5
  assert r["pd_vs_same"] > 1e-4
  # 4 shared steps (128 images / 32), 8 children each.
  assert r["loop_steps"] == 4 and r["loop_distinct"] == 4
