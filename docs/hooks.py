"""MkDocs hooks (mkdocs.yml: ``hooks``).

- Puts this folder on the import path, so mkdocs-click can load the
  ``jobwatch`` Click group from ``gen.py`` (``reference/commands.md``) whether
  MkDocs runs as ``mkdocs`` or ``python -m mkdocs``. (MkDocs restores
  ``sys.path`` after it has imported this file, hence an event.)
- Publishes the benchmark results (``bench/results/``: plots, JSON, profiles)
  beside the benchmarks page, so ``benchmarks/index.md`` links them as
  ``bench/results/<file>`` without a copy inside docs/.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCH_RESULTS = ROOT / "bench" / "results"
#: Where the results appear in the site: beside benchmarks/index.md.
BENCH_RESULTS_IN_SITE = "benchmarks/bench/results"


def on_config(config: Any) -> Any:
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return config


def on_files(files: Files, config: Any) -> Files:
    for path in sorted(BENCH_RESULTS.glob("*")):
        if path.is_file():
            files.append(File.generated(config, f"{BENCH_RESULTS_IN_SITE}/{path.name}", abs_src_path=str(path)))
    return files
