#!/usr/bin/env python3
"""Copies a small subset of llama.cpp's golden vectors (../shared/golden) into data/golden_subset.json.

For every golden file: the bytes llama.cpp wrote for the first block of each of the 4 rows. The inputs are not
copied: tests regenerate them with the generator the manifest documents (include/qz/core/random.hpp), so the
bit-exactness checks run even where ../shared is absent. Run from the repository root:
    python3 tools/extract_golden_subset.py ../shared/golden > data/golden_subset.json
"""
import json
import os
import sys

golden = sys.argv[1] if len(sys.argv) > 1 else "../shared/golden"
manifest = json.load(open(os.path.join(golden, "manifest.json")))
rows, cols = manifest["rows"], manifest["cols"]
out = {"source": "llama.cpp ggml 0.25.1 via ../shared/golden (" + manifest["producer"] + ")",
       "seed": manifest["seed"], "rows": rows, "cols": cols, "entries": []}
for e in manifest["files"]:
    data = open(os.path.join(golden, e["quantized"]), "rb").read()
    row_bytes = len(data) // rows
    bb = e["bytes_per_block"]
    out["entries"].append({
        "type": e["type"], "ggml_type_id": e["ggml_type_id"], "distribution": e["distribution"],
        "imatrix": e["importance"] is not None,
        "first_blocks": [data[r * row_bytes: r * row_bytes + bb].hex() for r in range(rows)],
    })
json.dump(out, sys.stdout, indent=1)
sys.stdout.write("\n")
