#!/usr/bin/env python3
"""Structure checks for the server crate (src/), run by scripts/test.sh.

1. Layers: each top-level module may import (`crate::x`) only modules of its own or a lower
   layer, and the module graph must have no cycle. The layers, lowest first:
     model -> config, wire -> rt, metrics -> pipeline, probe, store, remote -> http, auth, api, ws
     -> shard -> roles
2. Size: no source file over 600 lines and no function over 80 lines, test modules aside,
   unless the line before the function says why with a comment containing "long:".
"""
import os
import re
import sys

LAYERS = [
    ["model"],
    ["config", "wire"],
    ["rt", "metrics"],
    ["pipeline", "probe", "store", "remote"],
    ["http", "auth", "api", "ws"],
    ["shard"],
    ["roles"],
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}
MAX_FILE = 600
MAX_FN = 80

def module_of(path):
    rel = os.path.relpath(path, "src")
    return rel.split(os.sep)[0].removesuffix(".rs")

def strip_tests(text):
    """Drops `#[cfg(test)] mod ... { ... }` blocks (brace-matched) and returns the rest."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*\n\s*(pub(\([a-z]+\))? )?mod \w+ \{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 0, m.end() - 1
        while j < len(text):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        i = j + 1
    out.append(text[i:])
    return "".join(out)

def long_functions(text):
    lines = text.split("\n")
    found = []
    for n, line in enumerate(lines):
        m = re.match(r"^(\s*)(pub(\([a-z]+\))? )?(async )?(unsafe )?fn (\w+)", line)
        if not m:
            continue
        indent = m.group(1)
        # A declaration without a body (a trait method) ends with `;` before any `{`.
        for k in range(n, len(lines)):
            if "{" in lines[k] or lines[k].rstrip().endswith(";"):
                break
        if "{" not in lines[k]:
            continue
        # The body ends at the first line that closes at the fn's indentation.
        for k in range(n + 1, len(lines)):
            if lines[k] == indent + "}":
                length = k - n + 1
                if length > MAX_FN and "long:" not in lines[n - 1]:
                    found.append((m.group(6), n + 1, length))
                break
    return found

def main():
    failures = []
    edges = {}
    for root, _, files in os.walk("src"):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            mod = module_of(path)
            text = open(path, encoding="utf-8").read()
            code = strip_tests(text)
            # Test-only files (`mod tests;` declared under #[cfg(test)]).
            if mod in ("lib", "main") or f == "tests.rs" or f"{os.sep}tests{os.sep}" in path:
                continue
            if mod not in RANK:
                failures.append(f"{path}: module `{mod}` has no layer in scripts/check-structure.py")
                continue
            for dep in set(re.findall(r"\bcrate::([a-z_]+)", code)):
                if dep == mod:
                    continue
                edges.setdefault(mod, set()).add(dep)
                if dep in RANK and RANK[dep] > RANK[mod]:
                    failures.append(f"{path}: `{mod}` (layer {RANK[mod]}) imports higher `{dep}` (layer {RANK[dep]})")
            n = code.count("\n")
            if n > MAX_FILE:
                failures.append(f"{path}: {n} lines outside tests (max {MAX_FILE})")
            for name, line, length in long_functions(code):
                failures.append(f"{path}:{line}: fn {name} is {length} lines (max {MAX_FN}; or say why with a `// long:` comment above it)")
    # Cycles among modules (also within a layer).
    state = {}
    def visit(m, stack):
        state[m] = 1
        for d in edges.get(m, ()):
            if state.get(d) == 1:
                failures.append("module cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2
    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    for f in failures:
        print(f"check-structure: {f}", file=sys.stderr)
    if failures:
        sys.exit(1)
    print(f"check-structure: ok ({len(RANK)} modules in {len(LAYERS)} layers, no cycle)")

if __name__ == "__main__":
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    main()
