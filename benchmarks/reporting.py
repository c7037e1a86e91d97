"""What every benchmark prints besides its timings: the machine, its load,
and aligned tables. Imported by the ``bench_*.py`` scripts of this folder."""

from __future__ import annotations

import datetime
import os
import platform
from types import ModuleType


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_line(*libraries: ModuleType) -> str:
    """CPU, cores, torch and its threads, the given libraries' versions, date, load."""
    import torch

    versions = "".join(f" | {library.__name__} {library.__version__}" for library in libraries)
    return (
        f"machine: {cpu_name()}, {os.cpu_count()} cores, {platform.machine()} | "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads, CPU){versions} | "
        f"python {platform.python_version()} | {datetime.datetime.now():%Y-%m-%d %H:%M} | "
        f"load average {load_average()} (other processes slow every timing down)"
    )


def table(header: list[str], rows: list[list]) -> None:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for j, row in enumerate(cells):
        print(
            "  "
            + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
        if j == 0:
            print("  " + "  ".join("-" * w for w in widths))
