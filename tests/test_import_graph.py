"""The import graph a newcomer can rely on, read from the source with `ast` (nothing is
imported): everything above `scope_core` reaches it only through `scope_core.api`;
`scope_core` imports none of the layers above it; `serving` never imports `agent`;
`agent.judging` never imports the agent modules that call it; and no modules import each
other, directly or round a longer loop."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABOVE = ("agent", "features", "serving", "bench")


def imports(package: str) -> Iterator[tuple[str, int, str]]:
    """(file, line, absolute module) for every import in `package`'s .py files; relative
    imports are resolved against the file's package."""
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT)
        here = list(rel.with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(rel))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield str(rel), node.lineno, alias.name
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # `from scope_core import x` names a submodule: count it as `scope_core.x`
                for alias in node.names:
                    yield str(rel), node.lineno, f"{module}.{alias.name}" if module == "scope_core" else module


def offending(packages: tuple[str, ...], bad) -> list[str]:
    return [f"{f}:{line}: imports {mod}" for p in packages for f, line, mod in imports(p) if bad(mod)]


def _top(module: str) -> str:
    return module.split(".")[0]


def test_the_layers_above_reach_scope_core_only_through_its_api():
    bad = offending(ABOVE, lambda m: _top(m) == "scope_core" and m != "scope_core.api")
    assert not bad, "import these names from scope_core.api (export them there if needed):\n" + "\n".join(bad)


def test_scope_core_imports_none_of_the_layers_above_it():
    bad = offending(("scope_core",), lambda m: _top(m) in ABOVE)
    assert not bad, "scope_core must not depend on the layers above it:\n" + "\n".join(bad)


def test_serving_never_imports_the_agent():
    bad = offending(("serving",), lambda m: _top(m) == "agent")
    assert not bad, "serving must not depend on agent (the agent builds on serving):\n" + "\n".join(bad)


def test_the_judging_package_never_imports_its_callers():
    """`agent.judging` (judge client, embedded judge, LLM features, the judge as proposer) sits
    below the loop, labelling and the FCR job: of the rest of `agent` it uses only the shared
    data types and the prompt renderer."""
    allowed = ("agent.judging", "agent.hypotheses", "agent.prompts")
    bad = offending(("agent/judging",), lambda m: _top(m) == "agent" and not any(m == a or m.startswith(a + ".") for a in allowed))
    assert not bad, "agent.judging must not depend on the agent modules that call it:\n" + "\n".join(bad)


def test_no_import_cycles():
    """A cycle (two modules that import each other, one of them inside a function to get
    away with it) means a piece sits in the wrong module."""
    packages = ("scope_core", *ABOVE)
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for pkg in packages for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for pkg in packages:
        for f, _, mod in imports(pkg):
            here = ".".join(Path(f).with_suffix("").parts).removesuffix(".__init__")
            if mod in modules and mod != here:
                graph[here].add(mod)

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = {" -> ".join(c) for m in sorted(modules) if (c := cycle_from(m))}
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_every_name_the_api_promises_is_there():
    """`scope_core.api` loads most names on first use; each must resolve to a real object."""
    import scope_core.api as api

    missing = [name for name in api.__all__ if getattr(api, name, None) is None]
    assert not missing, f"scope_core.api.__all__ names that do not resolve: {missing}"
