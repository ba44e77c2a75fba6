#!/usr/bin/python3
"""Checks that the source layers stay one-way: a file may include headers of
its own layer and of the layers below it, never of a layer above.

The order of the layers, and the layer of every public header, are written
here and nowhere else (docs/ARCHITECTURE.md explains them). A header not in
the table, or a source file outside the known folders, is an error too, so a
new file has to be placed deliberately.

Usage: scripts/check-layers.py [ROOT]   (exit 0 clean, 1 with the violations)
"""

import os
import re
import sys

# Bottom to top. A layer may use everything to its left.
LAYERS = ["core", "config", "auth", "metrics", "tls", "net", "backend", "session", "route",
          "k8s", "proto", "admin", "server", "main"]

# include/switchyard/<name> -> layer.
HEADERS = {
    "clock.h": "core", "hex.h": "core", "errors.h": "core", "log.h": "core", "pool.h": "core", "cidr.h": "core",
    "redis_url.h": "core", "mapfile.h": "core", "proxy_protocol.h": "core",
    "toml.h": "config", "config.h": "config",
    "sasl.h": "auth",
    "metrics.h": "metrics",
    "tls.h": "tls",
    "stream.h": "net", "worker.h": "net", "http.h": "net",
    "health.h": "backend", "snapshot.h": "backend", "dial.h": "backend",
    "session.h": "session",
    "cache.h": "route", "cluster.h": "route", "store.h": "route", "route.h": "route",
    "hold.h": "route",
    "interactive.h": "proto", "tokens.h": "proto", "protocols.h": "proto",
    "admin.h": "admin",
    "runtime.h": "server", "server.h": "server", "reload.h": "server", "fleet_rt.h": "server", "discovery_rt.h": "server",
}

# Optional layers whose folder may not exist yet.
K8S_PREFIX = "k8s"

INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of_source(rel):
    """Layer of a file under src/ (its folder), or None."""
    parts = rel.split("/")
    if parts[0] != "src":
        return None
    if len(parts) == 2:
        return "main" if parts[1] == "main.c" else None
    return parts[1] if parts[1] in LAYERS else None


def header_layer(name):
    if name.startswith("switchyard/"):
        base = name[len("switchyard/"):]
        if base.startswith(K8S_PREFIX) and base not in HEADERS:
            return "k8s"
        return HEADERS.get(base)
    return None


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rank = {name: i for i, name in enumerate(LAYERS)}
    problems = []
    files = []
    for base in ("src", "include/switchyard"):
        for dirpath, _, names in os.walk(os.path.join(root, base)):
            for n in sorted(names):
                if n.endswith((".c", ".h")):
                    files.append(os.path.relpath(os.path.join(dirpath, n), root))
    for rel in sorted(files):
        if rel.startswith("include/"):
            name = os.path.basename(rel)
            layer = header_layer("switchyard/" + name)
            if layer is None:
                problems.append(f"{rel}: header has no layer; add it to HEADERS in scripts/check-layers.py")
                continue
        else:
            layer = layer_of_source(rel)
            if layer is None:
                problems.append(f"{rel}: not in a layer folder (src/<layer>/ with layer one of {', '.join(LAYERS)})")
                continue
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
            text = f.read()
        for m in INCLUDE_RE.finditer(text):
            inc = m.group(1)
            lineno = text.count("\n", 0, m.start()) + 1
            if not inc.startswith("switchyard/"):
                # A private header beside the file: same folder, same layer.
                if "/" in inc or not os.path.exists(os.path.join(root, os.path.dirname(rel), inc)):
                    problems.append(f"{rel}:{lineno}: \"{inc}\" is neither a public header nor one beside the file")
                continue
            target = header_layer(inc)
            if target is None:
                problems.append(f"{rel}:{lineno}: \"{inc}\" has no layer; add it to HEADERS")
            elif rank[target] > rank[layer]:
                problems.append(f"{rel}:{lineno}: layer {layer} includes \"{inc}\" of layer {target}, "
                                f"which is above it (order: {' < '.join(LAYERS)})")
    for p in problems:
        print(p)
    if problems:
        print(f"layers: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"layers: {len(files)} files, one-way ({' < '.join(LAYERS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
