"""Structure of the jaxmed package, read from its source with `ast` (no jaxmed or jax import):
no import cycles, no library module importing a command module, no overlong functions, and
(in a subprocess, the one part that imports) no absl flags defined by merely importing jaxmed.
"""

import ast
import collections
import subprocess
import sys
import textwrap
import tomllib
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

MAX_FUNCTION_LINES = 100
# "module:Qualified.name" -> one-line reason it may be longer than MAX_FUNCTION_LINES.
LONG_FUNCTION_ALLOWLIST: dict[str, str] = {}

# absl flags that the command modules own; importing a module must not define them, or two
# modules (or a user's own absl program) importing jaxmed clash with DuplicateFlagError.
COMMAND_FLAG_NAMES = ("config", "workdir", "distributed")


# ---------------------------------------------------------------------------------------------
# The package's modules, found the way setuptools lays them out in the wheel.


def _package_roots(repo: Path) -> dict[str, Path]:
  """{package name: source folder} for the top package and every `package-dir` remapping.

  Read from pyproject.toml so that a remapped package (jaxmed.configs lives in configs/) is
  checked where the wheel takes it from, not only what happens to sit under jaxmed/.
  """
  setuptools = tomllib.loads((repo / "pyproject.toml").read_text()).get("tool", {}).get(
      "setuptools", {})
  roots = {"jaxmed": repo / "jaxmed"}
  for name, folder in setuptools.get("package-dir", {}).items():
    if name == "jaxmed" or name.startswith("jaxmed."):
      roots[name] = repo / folder
  return roots


def discover_modules(repo: Path = REPO) -> dict[str, "Module"]:
  modules = {}
  for root_name, root in _package_roots(repo).items():
    for path in sorted(root.rglob("*.py")):
      rel = path.relative_to(root).with_suffix("")
      if "__pycache__" in rel.parts:
        continue
      # Only folders that are packages (have an __init__.py up the chain) are importable.
      if any(not (root.joinpath(*rel.parts[:i]) / "__init__.py").is_file()
             for i in range(len(rel.parts))):
        continue
      parts = [root_name, *rel.parts]
      is_package = parts[-1] == "__init__"
      if is_package:
        parts.pop()
      name = ".".join(parts)
      # A remapped package (jaxmed.configs) wins over a same-named folder under jaxmed/.
      if name not in modules or root_name != "jaxmed":
        modules[name] = Module(name, path, is_package, repo)
  return modules


class Module:
  def __init__(self, name: str, path: Path, is_package: bool, repo: Path):
    self.name, self.path, self.is_package, self.repo = name, path, is_package, repo
    with warnings.catch_warnings():  # a bad escape in a docstring is not this test's business
      warnings.simplefilter("ignore")
      self.tree = ast.parse(path.read_text(), filename=str(path))

  @property
  def rel(self) -> str:
    return str(self.path.relative_to(self.repo))

  @property
  def package(self) -> str:
    """The package relative imports start from (`__package__`)."""
    return self.name if self.is_package else self.name.rpartition(".")[0]

  @property
  def is_command(self) -> bool:
    """Run with `python -m`: a `__main__.py`, or any module with `if __name__ == "__main__"`."""
    if self.path.name == "__main__.py":
      return True
    for node in ast.walk(self.tree):
      if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Name)
          and node.left.id == "__name__" and len(node.comparators) == 1
          and isinstance(node.comparators[0], ast.Constant)
          and node.comparators[0].value == "__main__"):
        return True
    return False


MODULES = discover_modules()


# ---------------------------------------------------------------------------------------------
# Imports, as (line, target module, names taken from it) per statement.


def _is_type_checking_block(node: ast.AST) -> bool:
  test = getattr(node, "test", None)
  return isinstance(node, ast.If) and (
      (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
      or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _import_nodes(tree: ast.AST):
  """Every import statement, at any depth (inside functions too: a function-level import is
  still a dependency, often one that hides a cycle), except under `if TYPE_CHECKING:`, which
  never runs. A literal `importlib.import_module("jaxmed.x")` counts as `import jaxmed.x`."""
  stack = [tree]
  while stack:
    node = stack.pop()
    if _is_type_checking_block(node):
      stack.extend(node.orelse)
      continue
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      yield node
    elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
          and isinstance(node.args[0].value, str)
          and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
               or (isinstance(node.func, ast.Name) and node.func.id == "import_module"))):
      yield ast.Import(names=[ast.alias(name=node.args[0].value)], lineno=node.lineno)
    stack.extend(ast.iter_child_nodes(node))


def _absolute(module: Module, node: ast.ImportFrom) -> str:
  if not node.level:
    return node.module or ""
  base = module.package.split(".")
  base = base[:len(base) - (node.level - 1)]
  return ".".join(base + ([node.module] if node.module else []))


def _known(name: str, modules) -> str | None:
  """The longest prefix of a dotted name that is a jaxmed module (None: not jaxmed's)."""
  parts = name.split(".")
  for i in range(len(parts), 0, -1):
    if ".".join(parts[:i]) in modules:
      return ".".join(parts[:i])
  return None


def _ancestors(name: str) -> list[str]:
  parts = name.split(".")
  return [".".join(parts[:i]) for i in range(1, len(parts))]


def _direct_imports(module: Module, modules=MODULES):
  """(line, module, attribute names or None) for each jaxmed module a statement names.

  `import a.b` and `from a import b` with b a submodule name the submodule; `from a import f`
  names `a` with ("f",), the names it reads from a's namespace.
  """
  for node in _import_nodes(module.tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        target = _known(alias.name, modules)
        if target:
          yield node.lineno, target, None
      continue
    source = _absolute(module, node)
    if _known(source, modules) != source:
      continue
    attributes = []
    for alias in node.names:
      submodule = f"{source}.{alias.name}"
      if submodule in modules:
        yield node.lineno, submodule, None
      else:
        attributes.append(alias.name)
    if attributes:
      yield node.lineno, source, tuple(attributes)


def _reexport_sources(package: str, modules) -> dict[str, str]:
  """{name: submodule} for names a package's __init__ only re-exports from one of its own
  submodules (`from .folder import load` / `from jaxmed.data.folder import load`)."""
  init = modules[package]
  provided = {}
  for node in init.tree.body:
    if isinstance(node, ast.ImportFrom):
      source = _absolute(init, node)
      if source.startswith(package + ".") and source in modules:
        for alias in node.names:
          provided[alias.asname or alias.name] = source
  return provided


def import_graph(modules=MODULES) -> dict[str, dict[str, tuple[str, int]]]:
  """{importer: {imported: (file, line)}}: the modules whose code an import makes run.

  The rule for packages, and why:
  * `import a.b.c` runs a/__init__, a/b/__init__ and a/b/c, so it is an edge to each of them ...
  * ... except to the importer's own ancestor packages. Python initialises every ancestor of a
    module before that module's body runs, so by then they are done or in progress and naming
    them again runs nothing. Without this, each `__init__` that imports its own submodules
    would form a bogus cycle `pkg -> pkg.sub -> pkg` with any submodule importing a sibling.
  * `from <ancestor> import f` does read the ancestor's namespace, which is still incomplete
    while its `__init__` is running: if the `__init__` only re-exports f from a submodule, the
    real dependency is that submodule (the edge goes there, the `__init__` is no participant);
    if the `__init__` defines f itself, the edge goes to the `__init__`.
  A package outside the importer's ancestry is an ordinary participant: importing
  jaxmed.data.folder from jaxmed.models runs all of jaxmed/data/__init__.py and what it imports.
  """
  graph = {}
  for name, module in modules.items():
    edges = {}
    own_ancestors = set(_ancestors(name))
    for line, target, attributes in _direct_imports(module, modules):
      runs = [step for step in [*_ancestors(target), target]
              if step not in own_ancestors and step != name]
      if attributes and target in own_ancestors:
        reexports = _reexport_sources(target, modules)  # a name it does not re-export: the __init__'s own
        runs += [reexports.get(attribute, target) for attribute in attributes]
      for step in runs:
        if step != name:  # keep the first line that imports it: the one a reader looks for
          edges[step] = min(edges.get(step, (module.rel, line)), (module.rel, line))
    graph[name] = edges
  return graph


def _strongly_connected(graph) -> list[list[str]]:
  """Tarjan's algorithm, iterative; components with more than one module, or a self-loop."""
  index, low, on_stack, stack, result = {}, {}, set(), [], []
  counter = 0
  for root in sorted(graph):
    if root in index:
      continue
    work = [(root, iter(sorted(graph[root])))]
    index[root] = low[root] = counter
    counter += 1
    stack.append(root)
    on_stack.add(root)
    while work:
      node, children = work[-1]
      child = next(children, None)
      if child is not None:
        if child not in index:
          index[child] = low[child] = counter
          counter += 1
          stack.append(child)
          on_stack.add(child)
          work.append((child, iter(sorted(graph[child]))))
        elif child in on_stack:
          low[node] = min(low[node], index[child])
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[node])
      if low[node] == index[node]:
        component = []
        while True:
          member = stack.pop()
          on_stack.discard(member)
          component.append(member)
          if member == node:
            break
        if len(component) > 1 or node in graph[node]:
          result.append(sorted(component))
  return result


def _shortest_cycle(graph, start: str, within: set[str]) -> list[str]:
  """start -> ... -> start, by breadth-first search inside one strongly connected component."""
  parent = {start: None}
  queue = collections.deque([start])
  while queue:
    node = queue.popleft()
    for child in sorted(graph[node]):
      if child == start:
        path = [node]
        while parent[path[-1]] is not None:
          path.append(parent[path[-1]])
        return [*reversed(path), start]
      if child in within and child not in parent:
        parent[child] = node
        queue.append(child)
  raise AssertionError(f"{start} is on no cycle")


def import_cycles(graph) -> list[list[str]]:
  """One shortest cycle through each module of each cycle component, duplicates dropped."""
  cycles, seen = [], set()
  for component in _strongly_connected(graph):
    for start in component:
      cycle = _shortest_cycle(graph, start, set(component))
      i = cycle.index(min(cycle[:-1]))  # the same cycle from any start looks the same
      canonical = tuple(cycle[i:-1] + cycle[:i])
      if canonical not in seen:
        seen.add(canonical)
        cycles.append([*canonical, canonical[0]])
  return cycles


# ---------------------------------------------------------------------------------------------
# Tests.


def test_modules_were_found():
  # Guards the tests below against passing vacuously (a moved package, a parse change).
  assert {"jaxmed", "jaxmed.train", "jaxmed.data", "jaxmed.configs.demo"} <= set(MODULES)
  assert any(m.is_command for m in MODULES.values())


def test_import_graph_rules_on_a_made_up_package(tmp_path):
  # The package rules of import_graph on a small tree whose true cycles are known.
  files = {
      "pyproject.toml": "[project]\nname = 'x'\n",
      # __init__ files importing their own submodules, which name their ancestors, import
      # siblings and read names an __init__ only re-exports: no cycle ...
      "jaxmed/__init__.py": "import jaxmed.p\nfrom jaxmed.p.y import g\nVERSION = 1\n",
      "jaxmed/p/__init__.py": "from jaxmed.p.x import f\nfrom .y import g\nfrom . import w\n",
      "jaxmed/p/x.py": "import jaxmed.p\nfrom jaxmed.p import y\nfrom jaxmed import p, g\n",
      "jaxmed/p/y.py": "import jaxmed\ndef g():\n  pass\n",
      # ... until one reads a name that the top __init__ defines itself, after importing the
      # reader: `import jaxmed` fails (real cycle jaxmed -> p -> p.w -> jaxmed)
      "jaxmed/p/w.py": "from jaxmed import VERSION\n",
      # `from <ancestor> import f` resolves to the re-exporting submodule; a function-level
      # import closes the cycle: q.s -> q.t -> q.s
      "jaxmed/q/__init__.py": "from jaxmed.q.s import f\n",
      "jaxmed/q/s.py": "def f():\n  from jaxmed.q import t\n",
      "jaxmed/q/t.py": "from jaxmed.q import f\n",
      # a package outside the importer's ancestry takes part: m -> r (its __init__) -> r.v -> m
      "jaxmed/m.py": "from jaxmed.r.u import h\nimport jaxmed.n\n",
      "jaxmed/r/__init__.py": "from .v import k\n",
      "jaxmed/r/u.py": "h = 1\n",
      "jaxmed/r/v.py": "from .. import m\nk = 1\n",
      # under TYPE_CHECKING: never runs, no edge n -> m
      "jaxmed/n.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n  from jaxmed import m\n",
  }
  for name, text in files.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
  modules = discover_modules(tmp_path)
  graph = import_graph(modules)
  assert set(graph["jaxmed.p.x"]) == {"jaxmed.p.y"}  # g: re-exported from p.y by the top __init__
  assert set(graph["jaxmed.p.w"]) == {"jaxmed"}  # VERSION: the top __init__'s own name
  assert set(graph["jaxmed.q.t"]) == {"jaxmed.q.s"}
  assert set(graph["jaxmed.m"]) == {"jaxmed.r", "jaxmed.r.u", "jaxmed.n"}
  assert graph["jaxmed.n"] == {}
  assert sorted(import_cycles(graph)) == [
      ["jaxmed", "jaxmed.p", "jaxmed.p.w", "jaxmed"],
      ["jaxmed.m", "jaxmed.r", "jaxmed.r.v", "jaxmed.m"],
      ["jaxmed.q.s", "jaxmed.q.t", "jaxmed.q.s"]]


def test_no_import_cycles():
  graph = import_graph()
  cycles = import_cycles(graph)
  lines = []
  for cycle in cycles:
    lines.append(" -> ".join(cycle))
    for a, b in zip(cycle, cycle[1:]):
      file, line = graph[a][b]
      why = " (reads a name its __init__ defines itself)" if b in _ancestors(a) else ""
      lines.append(f"    {file}:{line} imports {b}{why}")
  assert not cycles, (
      f"{len(cycles)} import cycle(s) in jaxmed (an edge to a package is its __init__: it runs, "
      "or a name it defines itself is read; rules in import_graph):\n" + "\n".join(lines))


def test_library_modules_do_not_import_command_modules():
  # A command module parses flags, re-execs itself for the allocator, or runs work when imported
  # as __main__; a library that imports it inherits all that (and its absl flags).
  commands = {name for name, m in MODULES.items() if m.is_command}
  assert {"jaxmed.train", "jaxmed.weights.__main__"} <= commands
  bad = []
  for name, module in MODULES.items():
    if module.is_command:
      continue  # jaxmed/__init__.py is a library module like any other, so it is checked
    for line, target, _ in _direct_imports(module):
      if target in commands:
        bad.append(f"{module.rel}:{line} ({name}) imports command module {target}")
  assert not bad, "library modules import command modules:\n" + "\n".join(sorted(set(bad)))


def _functions(module: Module):
  """(qualified name, first line, line count) of every function, nested ones included."""
  def visit(node, prefix):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
        qualified = prefix + child.name
        yield qualified, child.lineno, child.end_lineno - child.lineno + 1
        yield from visit(child, qualified + ".")
      elif isinstance(child, ast.ClassDef):
        yield from visit(child, prefix + child.name + ".")
      else:
        yield from visit(child, prefix)
  yield from visit(module.tree, "")


def test_no_function_longer_than_the_limit():
  too_long = []
  for name, module in MODULES.items():
    for qualified, line, length in _functions(module):
      key = f"{name}:{qualified}"
      if length > MAX_FUNCTION_LINES and key not in LONG_FUNCTION_ALLOWLIST:
        too_long.append(f"{module.rel}:{line} {key} is {length} lines")
  assert not too_long, (f"functions over {MAX_FUNCTION_LINES} lines (split them, or list them "
                        "in LONG_FUNCTION_ALLOWLIST with a reason):\n" + "\n".join(too_long))


def test_long_function_allowlist_is_current():
  # An entry that no longer applies would silently allow the next long function of that name.
  lengths = {f"{name}:{q}": n for name, m in MODULES.items() for q, _, n in _functions(m)}
  stale = [key for key in LONG_FUNCTION_ALLOWLIST
           if lengths.get(key, 0) <= MAX_FUNCTION_LINES]
  assert not stale, f"allowlisted but missing or short enough now: {stale}"
  assert all(reason.strip() and "\n" not in reason for reason in LONG_FUNCTION_ALLOWLIST.values())


def test_importing_jaxmed_defines_no_command_flags():
  # One process for all modules: flags defined at import by any of them accumulate in
  # absl.flags.FLAGS, which is exactly what breaks a second absl program importing jaxmed.
  script = textwrap.dedent(f"""
      import importlib, pkgutil, sys
      import jaxmed
      names = [m.name for m in pkgutil.walk_packages(jaxmed.__path__, "jaxmed.")]
      # jaxmed.configs is remapped from configs/ and may be missing from jaxmed.__path__ in an
      # editable install; import it (and walk it) explicitly.
      import jaxmed.configs
      names += [m.name for m in pkgutil.walk_packages(jaxmed.configs.__path__, "jaxmed.configs.")]
      for name in sorted(set(names)):
        if name.rsplit(".", 1)[-1] != "__main__":
          importlib.import_module(name)
      from absl import flags
      defined = sorted(set({COMMAND_FLAG_NAMES!r}) & set(flags.FLAGS))
      owners = {{n: flags.FLAGS.find_module_defining_flag(n) for n in defined}}
      print("imported", len(names), "modules")
      if defined:
        sys.exit(f"importing jaxmed defined absl flags: {{owners}}")
      """)
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
