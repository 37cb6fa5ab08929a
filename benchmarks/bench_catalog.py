"""Benchmark: what the endpoint catalog costs every task process (import time and memory).

Each measurement is a cold subprocess, repeated and reduced to its median, compared with a bare
``python -c pass`` run the same way:

- *import*: ``import airflow_provider_exactonline.catalog`` (no data read yet);
- *first resolve*: the import plus ``resolve_entity('Accounts')`` (reads catalog.json, builds the index);
- *field_info*: plus ``spec.field_info()`` (also reads descriptions.json).

Reports wall time and peak RSS (``ru_maxrss`` of the child) as deltas over the bare interpreter and as
ratios to it. Exit status 1 if the first resolve adds more than 2 s or 100 MiB (a regression guard far
above the expected figures, so a loaded machine does not trip it).

    python benchmarks/bench_catalog.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

PROBE = """
import json, resource, sys, time
{warm}
start = time.perf_counter()
{code}
elapsed = time.perf_counter() - start
print(json.dumps({{"seconds": elapsed, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""

CASES = {
    "bare python": "pass",
    "import": "import airflow_provider_exactonline.catalog",
    "first resolve": ("from airflow_provider_exactonline.catalog import resolve_entity\nresolve_entity('Accounts')"),
    "field_info": (
        "from airflow_provider_exactonline.catalog import resolve_entity\nresolve_entity('Accounts').field_info()"
    ),
}
# Stdlib modules every Airflow task process has loaded anyway: the "warm" cases import them before the
# timer starts, so they show the catalog's own cost.
WARM = "import dataclasses, difflib, functools, inspect, logging, pathlib, re, typing"
WARM_CASES = ("import", "first resolve")
MAX_SECONDS = 2.0
MAX_RSS_KIB = 100 * 1024


def measure(code: str, repeat: int, warm: str = "") -> tuple[float, float, float]:
    """Median (process wall seconds, in-process seconds, peak RSS KiB) over ``repeat`` cold runs."""
    walls, inner, rss = [], [], []
    probe = PROBE.format(code=code, warm=warm)
    for _ in range(repeat):
        start = _now()
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
        walls.append(_now() - start)
        data = json.loads(result.stdout.strip().splitlines()[-1])
        inner.append(data["seconds"])
        rss.append(data["rss_kib"])
    return statistics.median(walls), statistics.median(inner), statistics.median(rss)


def _now() -> float:
    import time

    return time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    results = {name: measure(code, args.repeat) for name, code in CASES.items()}
    results["bare + stdlib"] = measure("pass", args.repeat, WARM)
    for name in WARM_CASES:
        results[f"{name} (warm)"] = measure(CASES[name], args.repeat, WARM)
    bare_wall, _, bare_rss = results["bare python"]
    print(f"{'case':<22} {'process s':>10} {'vs bare':>8} {'in-process ms':>14} {'peak RSS MiB':>13} {'+MiB':>7}")
    for name, (wall, inner, rss) in results.items():
        print(
            f"{name:<22} {wall:>10.3f} {wall / bare_wall:>7.2f}x {inner * 1000:>14.1f} "
            f"{rss / 1024:>13.1f} {(rss - bare_rss) / 1024:>7.1f}"
        )
    _, resolve_inner, resolve_rss = results["first resolve"]
    added_rss = resolve_rss - bare_rss
    print(
        f"first resolve adds {resolve_inner * 1000:.0f} ms and {added_rss / 1024:.1f} MiB "
        f"(RSS ratio {resolve_rss / bare_rss:.2f}x bare python)"
    )
    if resolve_inner > MAX_SECONDS or added_rss > MAX_RSS_KIB:
        print(f"FAIL: over the guard ({MAX_SECONDS} s / {MAX_RSS_KIB // 1024} MiB)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
