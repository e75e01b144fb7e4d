"""Where every benchmark script's numbers go: one JSON file with the machine."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any


def write_results(out: Path, results: dict[str, Any]) -> None:
    machine = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, **results}, indent=2) + "\n")
    print(f"wrote {out}")
