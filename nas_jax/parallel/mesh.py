"""Device meshes, shardings and multi-host start-up (DESIGN.md, "Multi-device").

Every parallel code path of nas_jax runs on one ``jax.sharding.Mesh`` with the
axes ``("data", "model")``: batches are split over ``"data"`` with
``NamedSharding(mesh, P("data"))``, parameters are replicated, and ``jax.jit``
(GSPMD) inserts the collectives. Per-device work uses ``jax.shard_map`` over
the same mesh (see :mod:`nas_jax.parallel.children`). The same code runs on one
CPU, on 8 fake CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), on a multi-GPU host
and on a TPU pod once :func:`initialize_distributed` has connected the
processes.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
MODEL_AXIS = "model"
AXES = (DATA_AXIS, MODEL_AXIS)

# Set once this module has started the distributed runtime (or found it
# started), so repeated calls are cheap no-ops.
_DISTRIBUTED_STARTED = False
# Seconds a process waits for the others (JAX's default is 300); override
# with NAS_JAX_INIT_TIMEOUT.
DEFAULT_INIT_TIMEOUT = 120


def make_mesh(data: int = -1, model: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 2-D ``("data", "model")`` mesh over ``devices``.

  Args:
    data: size of the data-parallel axis; -1 takes every device the model
      axis leaves.
    model: size of the model-parallel axis.
    devices: the devices to use, default ``jax.devices()`` (all processes'
      devices, so on a pod the mesh spans every host).

  Returns:
    A mesh of shape ``{"data": data, "model": model}`` whose axes are
    ``AxisType.Auto``.

  Raises:
    ValueError: a size is out of range, or ``data * model`` differs from the
      number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if n == 0:
    raise ValueError("make_mesh needs at least one device, got none")
  if model < 1:
    raise ValueError(f"model must be >= 1, got {model}")
  if data == -1:
    if n % model:
      raise ValueError(f"the model axis size {model} does not divide the "
                       f"{n} devices, so data=-1 has no size to take")
    data = n // model
  if data < 1:
    raise ValueError(f"data must be >= 1 or -1 (all remaining devices), got "
                     f"{data}")
  if data * model != n:
    raise ValueError(f"mesh shape data={data} x model={model} = "
                     f"{data * model} devices, but {n} devices are "
                     f"available; use data=-1 to take them all")
  # jax.make_mesh orders devices along the physical topology (rings on TPU),
  # which plain reshaping does not. Its default axis type became Explicit in
  # recent JAX (sharding in types), which changes how jit and shard_map treat
  # unannotated arrays; we want GSPMD's Auto propagation.
  return jax.make_mesh((data, model), AXES,
                       axis_types=(AxisType.Auto, AxisType.Auto),
                       devices=devices)


def data_mesh() -> Mesh:
  """A mesh with every device on the ``"data"`` axis."""
  return make_mesh()


def replicated(mesh: Mesh) -> NamedSharding:
  """A sharding that keeps a full copy of an array on every mesh device."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Splits an array's leading (batch) axis over the mesh's ``"data"`` axis
  (replicated over any other axis)."""
  _check_data_axis(mesh, "batch_sharding")
  return NamedSharding(mesh, P(DATA_AXIS))


def data_size(mesh: Mesh) -> int:
  """The number of data-parallel shards of ``mesh``."""
  _check_data_axis(mesh, "data_size")
  return mesh.shape[DATA_AXIS]


def shard_batch(batch: Any, mesh: Mesh | None = None) -> Any:
  """Places every array of ``batch`` (any pytree) on ``mesh``, split along
  its leading (batch) axis over the mesh's ``'data'`` axis.

  Args:
    batch: pytree of arrays with a common leading batch dimension.
    mesh: a mesh with a ``'data'`` axis; default ``data_mesh()``.

  Returns:
    The same pytree of ``jax.Array``s, sharded ``NamedSharding(mesh,
    P('data'))``.

  Raises:
    ValueError: the mesh has no ``'data'`` axis, or a leading dimension is not
      a multiple of its size.
  """
  mesh = data_mesh() if mesh is None else mesh
  _check_data_axis(mesh, "shard_batch")
  devices = mesh.shape[DATA_AXIS]
  sharding = NamedSharding(mesh, P(DATA_AXIS))

  def put(x):
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    if x.ndim == 0 or x.shape[0] % devices:
      raise ValueError(
          f"batch dimension {x.shape[:1]} is not divisible by the {devices} "
          f"devices on the mesh's {DATA_AXIS!r} axis; use a batch size that "
          f"is a multiple of {devices} (or drop_remainder=True in batches).")
    return jax.device_put(x, sharding)

  return jax.tree.map(put, batch)


def _check_data_axis(mesh: Mesh, what: str) -> None:
  if DATA_AXIS not in mesh.shape:
    raise ValueError(f"mesh has axes {tuple(mesh.shape)}; {what} needs one "
                     f"named {DATA_AXIS!r} to split the batch over")


def _int_env(name: str) -> int:
  try:
    return int(os.environ.get(name, "0"))
  except ValueError:
    return 0


def _detect_cluster() -> str | None:
  """Names the multi-process launcher this process runs under, or None.

  Only launchers that start more than one process count (a one-task SLURM job
  is a plain process). ``jax.distributed.initialize()`` with no arguments
  reads the rest (coordinator, process count and id) from the same place.
  """
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return "JAX_COORDINATOR_ADDRESS"
  if _int_env("SLURM_NTASKS") > 1 and "SLURM_STEP_NODELIST" in os.environ:
    return "SLURM"
  if "OMPI_MCA_orte_hnp_uri" in os.environ or _int_env(
      "OMPI_COMM_WORLD_SIZE") > 1:
    return "Open MPI"
  for var in ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"):
    if "," in os.environ.get(var, ""):
      return f"TPU pod ({var})"
  if "MEGASCALE_COORDINATOR_ADDRESS" in os.environ:
    return "TPU multislice (MEGASCALE_COORDINATOR_ADDRESS)"
  # A Cloud TPU VM learns its pod from the metadata server; JAX recommends
  # calling initialize() with no arguments on every TPU VM (it gives one
  # process on a single host). Detecting the chips uses a private JAX helper,
  # hence the guard: a JAX without it just skips this check.
  try:
    from jax._src import hardware_utils  # pylint: disable=g-import-not-at-top
    num_chips, _ = hardware_utils.num_available_tpu_chips_and_device_id()
  except Exception:  # pylint: disable=broad-except
    num_chips = 0
  if num_chips and os.environ.get("TPU_SKIP_MDS_QUERY") is None:
    return "Cloud TPU VM"
  return None


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """Connects this process to the others of a multi-host job, if there are.

  Calls ``jax.distributed.initialize`` when any argument is given, or with no
  arguments (JAX's cluster auto-detection) when the process was launched by a
  multi-process launcher: ``JAX_COORDINATOR_ADDRESS`` set, SLURM with several
  tasks, Open MPI, a TPU pod / Cloud TPU VM. A plain single process is left
  alone. ``NAS_JAX_DISTRIBUTED=0`` turns the auto-detection off and ``=1``
  forces the no-argument call.

  Must run before the first JAX computation (JAX's rule). Safe to call more
  than once: later calls only report that the runtime is up.

  Args:
    coordinator_address: ``host:port`` of process 0's coordinator.
    num_processes: total number of processes.
    process_id: this process's index in ``0..num_processes-1``.

  Returns:
    Whether the distributed runtime is initialised after the call.
  """
  global _DISTRIBUTED_STARTED
  if _DISTRIBUTED_STARTED or jax.distributed.is_initialized():
    _DISTRIBUTED_STARTED = True
    logging.info("jax.distributed already initialised; nothing to do")
    return True
  explicit = {k: v for k, v in (("coordinator_address", coordinator_address),
                                ("num_processes", num_processes),
                                ("process_id", process_id)) if v is not None}
  switch = os.environ.get("NAS_JAX_DISTRIBUTED", "").strip()
  if explicit:
    reason = "explicit arguments " + ", ".join(
        f"{k}={v}" for k, v in explicit.items())
  elif switch == "0":
    logging.info("NAS_JAX_DISTRIBUTED=0: not initialising jax.distributed")
    return False
  elif switch == "1":
    reason = "NAS_JAX_DISTRIBUTED=1"
  else:
    reason = _detect_cluster()
    if reason is None:
      logging.info("single process (no multi-host launcher detected); "
                   "jax.distributed not initialised")
      return False
  # A plain launch (launch/*.sh, tests) names the job in the environment:
  # JAX reads JAX_COORDINATOR_ADDRESS itself, these two we pass on.
  if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
    num_processes = _int_env("JAX_NUM_PROCESSES")
  if process_id is None and os.environ.get("JAX_PROCESS_ID"):
    process_id = _int_env("JAX_PROCESS_ID")
  timeout = _int_env("NAS_JAX_INIT_TIMEOUT") or DEFAULT_INIT_TIMEOUT
  address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  # CPU devices of different processes talk through gloo (XLA's CPU
  # collectives); without it a CPU mesh cannot span processes. GPUs and
  # TPUs use their own collectives, so this changes nothing there.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  logging.info("initialising jax.distributed (%s; coordinator %s, %s "
               "processes, this one %s, timeout %d s)", reason,
               address or "auto", num_processes or "auto",
               process_id if process_id is not None else "auto", timeout)
  # JAX aborts the whole process (a C++ fatal error, no exception) when the
  # coordinator cannot be reached, so check it first and fail clearly.
  if address and process_id is not None:
    _check_coordinator(address, process_id, timeout, reason)
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id,
                               initialization_timeout=timeout)
  except Exception as e:  # pylint: disable=broad-except
    # JAX raises several types (RuntimeError, XlaRuntimeError, ValueError).
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    raise RuntimeError(
        f"jax.distributed.initialize failed ({reason}; coordinator "
        f"{address or 'auto-detected'}): {first}. Check that process 0 of "
        f"the job runs and that its coordinator address host:port "
        f"(JAX_COORDINATOR_ADDRESS, launch/*.sh --coordinator) is reachable "
        f"from this machine and the port is free on process 0's host, that "
        f"JAX_NUM_PROCESSES / JAX_PROCESS_ID are right, or wait longer with "
        f"NAS_JAX_INIT_TIMEOUT=<seconds> (now {timeout}). It must run before "
        f"any JAX computation, e.g. first thing in main().") from e
  _DISTRIBUTED_STARTED = True
  logging.info("jax.distributed initialised: %s", process_info())
  return True


def _coordinator_fix(timeout: int) -> str:
  return (f"Check that process 0 of the job runs and that the coordinator "
          f"address host:port (JAX_COORDINATOR_ADDRESS, launch/*.sh "
          f"--coordinator) is process 0's host and reachable from this "
          f"machine, with the port free there; or wait longer with "
          f"NAS_JAX_INIT_TIMEOUT=<seconds> (now {timeout})")


def _check_coordinator(address: str, process_id: int, timeout: float,
                       reason: str) -> None:
  """Process 0 must be able to listen on ``address``; the others must reach
  it within ``timeout`` seconds.

  Raises:
    RuntimeError: naming the address and the fix.
  """
  host, _, port = address.rpartition(":")
  host = host.strip("[]")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise RuntimeError(f"coordinator address {address!r} ({reason}) is not "
                       "host:port, e.g. 10.0.0.2:8476")
  if process_id == 0:
    try:
      with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                         socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
    except OSError as e:
      raise RuntimeError(
          f"process 0 cannot listen on the coordinator address {address} "
          f"({reason}): {e}. Use a free port, and a host name or address of "
          f"process 0's own machine. {_coordinator_fix(int(timeout))}"
      ) from None
    return
  deadline = time.monotonic() + timeout
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=2.0):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise RuntimeError(
            f"process {process_id} could not reach the coordinator at "
            f"{address} ({reason}) within {timeout:.0f} s: {e}. "
            f"{_coordinator_fix(int(timeout))}") from None
      time.sleep(0.5)


def process_info() -> str:
  """One log line on where this process sits in the job."""
  return (f"process {jax.process_index()}/{jax.process_count()}, "
          f"{jax.local_device_count()} local / {jax.device_count()} global "
          f"{jax.default_backend()} devices")
