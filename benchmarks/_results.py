"""How every benchmark leaves its figures: <name>.json (the full results) and <name>.md (a table) in one
folder, and the JSON object on stdout."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(out_dir, name: str, out: dict, md_lines: list[str]) -> None:
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    (d / f"{name}.md").write_text("\n".join(md_lines) + "\n")
    print(json.dumps(out))
