"""Plain PyTorch reference programs for ``benchmarks/vs_torch.py`` (optional).

Lean, hand-written PyTorch of exactly the workloads nas_jax times (issue 14),
so that the two can be compared side by side on one CPU:

* ``child``: one training step (forward, backward, SGD-Nesterov lr 0.05,
  momentum 0.9, weight decay 1e-4, BatchNorm statistics) of the seed-003
  child networks of ``experiments/configs/seed003_digits.py``: a bias-free
  3x3 conv stem with BN, 2 cells of 16 channels with a 2x2 max pool
  (stride 2) between them, ReLU, global average pool, ``Linear(16, 10)``.
  Ops as ``nas_jax.children.ops``: ``conv_kxk`` = ReLU, bias-free conv, BN;
  ``sep_conv_3x3`` = twice (ReLU, depthwise 3x3, pointwise 1x1, BN).
  ``small`` = ``conv_3x3>sep_conv_3x3`` (a chain) on 28x28x1; ``large`` =
  ``x>conv_3x3;n0>sep_conv_3x3;x>conv_5x5`` on 32x32x3, whose cell output is
  the mean of its loose ends (nodes 1 and 2).
* ``update``: the REINFORCE update on 1024 architectures of the ENAS RNN
  space's LSTM controller as ``benchmarks/controller.py`` times it (12
  nodes: 23 decisions, one 100-unit LSTM layer with fused gates, logits
  ``2.5 * tanh(.)``, a shared 4-way activation head, attention pointers over
  earlier nodes, ENAS-style): re-score the given architectures (teacher
  forcing), loss ``-mean(A * log p) - 1e-4 * mean(entropy)``, backward, Adam
  (lr 3.5e-4).
* ``sample``: sampling a batch of architectures from that controller
  (no gradient; Gumbel-max per decision).

It never imports jax or nas_jax, and torch is no dependency of the project:
run it with any Python where ``torch`` imports. Prints one JSON line: the
median seconds per step over ``--steps`` timed steps after ``--warmup``.

    python benchmarks/torch_reference.py child --child small --batch 64
    python benchmarks/torch_reference.py update --batch 1024
    python benchmarks/torch_reference.py sample --batch 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from torch import nn
import torch.nn.functional as F

CHANNELS = 16
NUM_CLASSES = 10
# PyTorch's BN momentum 0.1 is nas_jax's 0.9 (ops.BN_MOMENTUM); eps alike.
BN_KW = dict(momentum=0.1, eps=1e-5)
CHILDREN = {  # name -> input (C, H, W)
    "small": (1, 28, 28),
    "large": (3, 32, 32),
}


class ReLUConvBN(nn.Sequential):

  def __init__(self, k: int):
    super().__init__(nn.ReLU(),
                     nn.Conv2d(CHANNELS, CHANNELS, k, padding=k // 2,
                               bias=False),
                     nn.BatchNorm2d(CHANNELS, **BN_KW))


class SepConv(nn.Sequential):

  def __init__(self, k: int = 3, repeats: int = 2):
    layers = []
    for _ in range(repeats):
      layers += [nn.ReLU(),
                 nn.Conv2d(CHANNELS, CHANNELS, k, padding=k // 2,
                           groups=CHANNELS, bias=False),
                 nn.Conv2d(CHANNELS, CHANNELS, 1, bias=False),
                 nn.BatchNorm2d(CHANNELS, **BN_KW)]
    super().__init__(*layers)


class SmallCell(nn.Module):
  """``conv_3x3>sep_conv_3x3``."""

  def __init__(self):
    super().__init__()
    self.op1, self.op2 = ReLUConvBN(3), SepConv(3)

  def forward(self, x):
    return self.op2(self.op1(x))


class LargeCell(nn.Module):
  """``x>conv_3x3;n0>sep_conv_3x3;x>conv_5x5``: n0 is read by n1, so the
  loose ends are n1 and n2."""

  def __init__(self):
    super().__init__()
    self.n0, self.n1, self.n2 = ReLUConvBN(3), SepConv(3), ReLUConvBN(5)

  def forward(self, x):
    n0 = self.n0(x)
    return (self.n1(n0) + self.n2(x)) / 2


class Child(nn.Module):

  def __init__(self, child: str):
    super().__init__()
    cin = CHILDREN[child][0]
    self.stem = nn.Sequential(
        nn.Conv2d(cin, CHANNELS, 3, padding=1, bias=False),
        nn.BatchNorm2d(CHANNELS, **BN_KW))
    cell = SmallCell if child == "small" else LargeCell
    self.cell0, self.cell1 = cell(), cell()
    self.fc = nn.Linear(CHANNELS, NUM_CLASSES)

  def forward(self, x):
    x = self.cell0(self.stem(x))
    x = self.cell1(F.max_pool2d(x, 2, 2))
    return self.fc(F.relu(x).mean((2, 3)))


def child_step_fn(child: str, batch: int):
  torch.manual_seed(0)
  model = Child(child).train()
  opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9,
                        nesterov=True, weight_decay=1e-4)
  x = torch.randn(batch, *CHILDREN[child])
  y = torch.randint(0, NUM_CLASSES, (batch,))

  def step():
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss

  return step


# -- the controller update ---------------------------------------------------

NUM_NODES = 12
HIDDEN = 100
NUM_ACTS = 4
TANH_CONSTANT = 2.5


class Controller(nn.Module):
  """The LSTM policy of ``nas_jax.controllers.lstm_policy`` on the ENAS RNN
  space, re-scoring a batch of architectures."""

  def __init__(self):
    super().__init__()
    u = lambda *s: nn.Parameter(torch.empty(*s).uniform_(-0.1, 0.1))
    self.go = u(HIDDEN)
    self.embedding = u(NUM_ACTS, HIDDEN)
    self.lstm_w = u(2 * HIDDEN, 4 * HIDDEN)
    self.lstm_b = nn.Parameter(torch.zeros(4 * HIDDEN))
    self.head_w = u(HIDDEN, NUM_ACTS)
    self.head_b = nn.Parameter(torch.zeros(NUM_ACTS))
    self.attn_prev = u(HIDDEN, HIDDEN)
    self.attn_curr = u(HIDDEN, HIDDEN)
    self.attn_v = u(HIDDEN)

  def lstm(self, x, c, h):
    i, f, g, o = (torch.cat([x, h], -1) @ self.lstm_w + self.lstm_b).chunk(
        4, -1)
    c = torch.sigmoid(f + 1.0) * c + torch.sigmoid(i) * torch.tanh(g)
    return c, torch.sigmoid(o) * torch.tanh(c)

  @staticmethod
  def pick(logits, a):
    logp_all = F.log_softmax(TANH_CONSTANT * torch.tanh(logits), -1)
    ent = -(logp_all.exp() * logp_all).sum(-1)
    return logp_all.gather(-1, a[:, None])[:, 0], ent

  def forward(self, arch):  # arch: [B, 23] (node0/act, then prev, act ...)
    return self.rollout(arch.shape[0], arch)[:2]

  def rollout(self, b: int, arch=None):
    """Re-scores ``arch`` or, if None, samples (Gumbel-max, one draw per
    decision): ``(log_prob [B], entropy [B], arch [B, 23])``."""
    picked = []

    def choose(logits, t):
      if arch is not None:
        return arch[:, t]
      u = torch.rand(logits.shape).clamp_(1e-20, 1.0)
      a = torch.argmax(TANH_CONSTANT * torch.tanh(logits)
                       - torch.log(-torch.log(u)), -1)
      picked.append(a)
      return a

    rows = torch.arange(b)
    c = h = torch.zeros(b, HIDDEN)
    inp = self.go.expand(b, HIDDEN)
    raw, proj, logp, ent = [], [], 0.0, 0.0
    t = 0
    for node in range(NUM_NODES):
      if node:  # the pointer to an earlier node
        c, h = self.lstm(inp, c, h)
        keys = torch.stack(proj, 1)  # [B, node, H]
        scores = torch.tanh(keys + (h @ self.attn_curr)[:, None]) @ self.attn_v
        a = choose(scores, t)
        lp, e = self.pick(scores, a)
        logp, ent = logp + lp, ent + e
        inp = torch.stack(raw, 1)[rows, a]
        t += 1
      c, h = self.lstm(inp, c, h)  # the activation
      logits = h @ self.head_w + self.head_b
      a = choose(logits, t)
      lp, e = self.pick(logits, a)
      logp, ent = logp + lp, ent + e
      inp = self.embedding[a]
      t += 1
      raw.append(h)
      proj.append(h @ self.attn_prev)
    return logp, ent, (arch if arch is not None else torch.stack(picked, 1))


def random_archs(batch: int, gen: torch.Generator) -> torch.Tensor:
  cols = [torch.randint(0, NUM_ACTS, (batch,), generator=gen)]
  for node in range(1, NUM_NODES):
    cols.append(torch.randint(0, node, (batch,), generator=gen))
    cols.append(torch.randint(0, NUM_ACTS, (batch,), generator=gen))
  return torch.stack(cols, 1)


def update_step_fn(batch: int):
  torch.manual_seed(0)
  gen = torch.Generator().manual_seed(2)
  model = Controller()
  opt = torch.optim.Adam(model.parameters(), lr=3.5e-4)
  archs = random_archs(batch, gen)
  rewards = torch.rand(batch, generator=gen)
  state = {"baseline": rewards.mean()}

  def step():
    opt.zero_grad(set_to_none=True)
    logp, ent = model(archs)
    state["baseline"] = 0.99 * state["baseline"] + 0.01 * rewards.mean()
    adv = rewards - state["baseline"]
    loss = -(adv * logp).mean() - 1e-4 * ent.mean()
    loss.backward()
    opt.step()
    return loss

  return step


def sample_step_fn(batch: int):
  torch.manual_seed(0)
  model = Controller()

  def step():
    with torch.no_grad():
      return model.rollout(batch)[2]

  return step


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("workload", choices=("child", "update", "sample"))
  p.add_argument("--child", choices=tuple(CHILDREN), default="small")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--threads", type=int, default=None,
                 help="torch.set_num_threads (default: torch's own)")
  args = p.parse_args(argv)
  if args.threads:
    torch.set_num_threads(args.threads)
  step = {"child": lambda: child_step_fn(args.child, args.batch),
          "update": lambda: update_step_fn(args.batch),
          "sample": lambda: sample_step_fn(args.batch)}[args.workload]()
  for _ in range(args.warmup):
    step()
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
  print(json.dumps({"median_s": statistics.median(times), "times": times,
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads()}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
