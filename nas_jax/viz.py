"""Pictures of architectures and searches.

``graphs(space, arch)`` turns an architecture of any family into one or more
small labelled DAGs (one per cell); ``to_dot`` writes them as graphviz DOT and
``render`` draws them to PNG/SVG with matplotlib (no system package needed;
``render_dot`` uses the ``dot`` program where it exists). ``search_curve``
plots reward against search step with the best-so-far line.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import subprocess

import numpy as np

from nas_jax.spaces import base


@dataclasses.dataclass
class Graph:
  title: str
  nodes: list[str]                                # labels, index = node id
  edges: list[tuple[int, int, str]] = dataclasses.field(default_factory=list)

  def add(self, label: str) -> int:
    self.nodes.append(label)
    return len(self.nodes) - 1


def _choices(space: base.SearchSpace, arch) -> dict[str, object]:
  return space.to_spec(arch)["choices"]


def _pointer_cells(space, arch, cells, unit, n_units, op_names, combine=None):
  """NASNet / ENAS micro cells: inputs h0, h1; unit i = two picked inputs,
  two ops, (combine); loose ends are concatenated into the output."""
  c = _choices(space, arch)
  graphs = []
  for cell in cells:
    g = Graph(f"{cell} cell", ["h[i-2]", "h[i-1]"])
    used = set()
    for i in range(n_units):
      p = f"{cell}/{unit}{i}/"
      comb = c[p + "combine"] if combine else "add"
      node = g.add(f"{unit} {i} ({comb})")
      for side in ("a", "b"):
        src = int(c[p + f"input_{side}"])
        used.add(src)
        g.edges.append((src, node, str(c[p + f"op_{side}"])))
    out = g.add("output")
    for n in range(2, 2 + n_units):
      if n not in used:
        g.edges.append((n, out, "concat"))
    graphs.append(g)
  return graphs


def graphs(space: base.SearchSpace, arch) -> list[Graph]:
  """One graph per cell (or one for a whole layered network)."""
  arch = space.validate(arch)
  name = space.name
  c = _choices(space, arch)
  if name == "nasbench201":
    g = Graph("NAS-Bench-201 cell", ["node 0 (in)", "node 1", "node 2",
                                     "node 3 (out)"])
    for key, op in c.items():
      _, j, _, i = key.split("_")
      if op != "none":
        g.edges.append((int(j), int(i), op))
    return [g]
  if name == "enas_micro":
    n = sum(1 for k in c if k.startswith("normal/") and k.endswith("/op_a"))
    return _pointer_cells(space, arch, ("normal", "reduce"), "node", n, None)
  if name == "nasnet":
    n = sum(1 for k in c if k.startswith("normal/") and k.endswith("/op_a"))
    return _pointer_cells(space, arch, ("normal", "reduce"), "block", n, None,
                          combine=True)
  if name == "enas_rnn":
    g = Graph("ENAS recurrent cell", ["x[t], h[t-1]"])
    n = sum(1 for k in c if k.endswith("/act"))
    used = set()
    for i in range(n):
      node = g.add(f"node {i}: {c[f'node{i}/act']}")
      src = 0 if i == 0 else 1 + int(c[f"node{i}/prev"])
      used.add(src)
      g.edges.append((src, node, ""))
    out = g.add("h[t] (average)")
    for i in range(n):
      if 1 + i not in used:
        g.edges.append((1 + i, out, "avg"))
    return [g]
  if name in ("enas_macro", "nasrl"):
    g = Graph("ENAS macro network" if name == "enas_macro" else
              "NAS-RL network", ["input"])
    n = sum(1 for k in c if k.endswith("/op") or k.endswith("/filter_height"))
    for i in range(n):
      if name == "enas_macro":
        label = f"layer {i}: {c[f'layer{i}/op']}"
      else:
        label = (f"layer {i}: {c[f'layer{i}/filter_height']}x"
                 f"{c[f'layer{i}/filter_width']}, {c[f'layer{i}/num_filters']}")
        if f"layer{i}/stride" in c:
          label += f", /{c[f'layer{i}/stride']}"
      node = g.add(label)
      g.edges.append((node - 1, node, ""))
      for j in range(i):
        if int(c.get(f"layer{i}/skip_from{j}", 0)):
          g.edges.append((1 + j, node, "skip"))
    return [g]
  if name == "seed003_small":
    g = Graph("seed-003 small cell", ["input", "h", "output"])
    g.edges += [(0, 1, str(c["op1"])), (1, 2, str(c["op2"]))]
    return [g]
  if name == "seed003_large":
    n = sum(1 for k in c if k.endswith("/op"))
    g = Graph("seed-003 large cell", ["input"])
    used = set()
    for i in range(n):
      node = g.add(f"node {i}")
      src = int(c[f"node{i}/input"])
      used.add(src)
      g.edges.append((src, node, str(c[f"node{i}/op"])))
    out = g.add("output (mean)")
    for i in range(n):
      if 1 + i not in used:
        g.edges.append((1 + i, out, ""))
    return [g]
  if name.startswith("nasrl_rnn"):  # Zoph & Le 2017 Fig. 5 tree cell
    d = space.decode(arch)
    g = Graph(f"NAS-RL tree cell (base {space.base})",
              ["x[t], h[t-1]", "c[t-1]"])
    out, tree = {}, {}  # tree node -> graph node (after / before inject)
    for k in range(space.num_tree_nodes):
      node = tree[k] = out[k] = g.add(
          f"{k}: {d['combine'][k]}, {d['act'][k]}")
      srcs = ([0] if k < space.base else
              [out[j] for j in space.children[k - space.base]])
      g.edges += [(s, node, "") for s in srcs]
      if k == d["inject_at"]:
        out[k] = g.add(f"inject: {d['inject'][0]}, {d['inject'][1]}")
        g.edges += [(node, out[k], ""), (1, out[k], "")]
    g.edges.append((out[space.num_tree_nodes - 1], g.add("h[t]"), ""))
    g.edges.append((tree[d["c_out"]], g.add("c[t]"), "pre-activation"))
    return [g]
  # Any other space: its decisions as a list, so something is always drawn.
  g = Graph(space.name, [f"{k} = {v}" for k, v in c.items()])
  g.edges = [(i, i + 1, "") for i in range(len(g.nodes) - 1)]
  return [g]


def to_dot(gs: list[Graph]) -> str:
  lines = ["digraph architecture {", "  rankdir=LR;",
           '  node [shape=box, style=rounded, fontname="Helvetica"];']
  for k, g in enumerate(gs):
    lines.append(f"  subgraph cluster_{k} {{")
    lines.append(f'    label="{g.title}";')
    for i, label in enumerate(g.nodes):
      lines.append(f'    n{k}_{i} [label="{label}"];')
    for s, d, label in g.edges:
      lines.append(f'    n{k}_{s} -> n{k}_{d} [label="{label}"];')
    lines.append("  }")
  lines.append("}")
  return "\n".join(lines) + "\n"


def render_dot(dot: str, path: str | pathlib.Path) -> bool:
  """Renders DOT with graphviz's ``dot`` if installed; returns success."""
  exe = shutil.which("dot")
  if exe is None:
    return False
  path = pathlib.Path(path)
  subprocess.run([exe, f"-T{path.suffix[1:]}", "-o", str(path)],
                 input=dot.encode(), check=True)
  return True


def _depths(g: Graph) -> list[int]:
  depth = [0] * len(g.nodes)
  for _ in g.nodes:  # longest-path layering; graphs are tiny DAGs
    for s, d, _ in g.edges:
      depth[d] = max(depth[d], depth[s] + 1)
  return depth


def _half_width(label: str) -> float:
  """Points from a node's centre to its box edge, roughly, at fontsize 9."""
  return max(16.0, 2.9 * len(label))


def render(gs: list[Graph], path: str | pathlib.Path) -> pathlib.Path:
  """Draws the graphs side by side with matplotlib (PNG, SVG or PDF)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  path = pathlib.Path(path)
  fig, axes = plt.subplots(1, len(gs), figsize=(6 * len(gs), 5),
                           squeeze=False)
  for ax, g in zip(axes[0], gs):
    depth = _depths(g)
    levels: dict[int, list[int]] = {}
    for i, d in enumerate(depth):
      levels.setdefault(d, []).append(i)
    pos = {}
    for d, members in levels.items():
      for r, i in enumerate(members):
        pos[i] = (1.6 * d, -1.2 * (r - (len(members) - 1) / 2))
    parallel: dict[tuple[int, int], list[int]] = {}
    for e, (s, d, _) in enumerate(g.edges):
      parallel.setdefault((s, d), []).append(e)
    for (s, d), members in parallel.items():
      (x0, y0), (x1, y1) = pos[s], pos[d]
      for k, e in enumerate(members):
        # Parallel edges fan out; long straight skips bend around the nodes
        # they would cross.
        rad = 0.3 * (k - (len(members) - 1) / 2)
        if len(members) == 1 and abs(x1 - x0) > 2 and y0 == y1:
          rad = 0.3
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=4,
                    arrowprops=dict(arrowstyle="-|>", color="0.35",
                                    shrinkA=_half_width(g.nodes[s]),
                                    shrinkB=_half_width(g.nodes[d]),
                                    connectionstyle=f"arc3,rad={rad}"))
        label = g.edges[e][2]
        if label:
          # Midpoint of matplotlib's arc3 quadratic Bezier curve.
          dx, dy = x1 - x0, y1 - y0
          lx = (x0 + x1) / 2 + 0.5 * rad * dy
          ly = (y0 + y1) / 2 - 0.5 * rad * dx
          ax.text(lx, ly, label, ha="center", va="center", fontsize=7,
                  color="C3", zorder=5,
                  bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none",
                            alpha=0.85))
    for i, label in enumerate(g.nodes):
      x, y = pos[i]
      ax.text(x, y, label, ha="center", va="center", fontsize=9, zorder=3,
              bbox=dict(boxstyle="round", fc="#e8f0fb", ec="#4a72b0"))
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.9, max(xs) + 0.9)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.set_title(g.title)
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def draw(space: base.SearchSpace, arch, path: str | pathlib.Path
         ) -> list[pathlib.Path]:
  """Writes ``path`` (matplotlib) and ``path.with_suffix('.dot')``; also an
  SVG from graphviz where ``dot`` is installed. Returns the files written."""
  path = pathlib.Path(path)
  gs = graphs(space, arch)
  dot = to_dot(gs)
  dot_path = path.with_suffix(".dot")
  dot_path.write_text(dot)
  written = [render(gs, path), dot_path]
  svg = path.with_suffix(".svg")
  if render_dot(dot, svg):
    written.append(svg)
  return written


def search_curve(rewards, path: str | pathlib.Path, *, title: str = "search",
                 ylabel: str = "reward") -> pathlib.Path:
  """Reward of each evaluated child against its step, and the best so far."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rewards = np.asarray(rewards, np.float64)
  steps = np.arange(len(rewards))
  fig, ax = plt.subplots(figsize=(7, 4))
  ax.plot(steps, rewards, ".", alpha=0.6, label="child")
  if len(rewards):
    ax.plot(steps, np.maximum.accumulate(rewards), "-", color="C3",
            label="best so far")
  ax.set_xlabel("child evaluated")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right")
  fig.tight_layout()
  path = pathlib.Path(path)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
