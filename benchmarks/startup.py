"""How long until the window is painted and usable? Goal: < 3 s from the source tree, < 8 s
packaged, on a 2-core machine (median of several starts, each a new process).

    .venv/bin/python benchmarks/startup.py [--starts 5] [--exe dist/SegFormerStudio/SegFormerStudio]

Each start is a new process with a new user data folder (a first start, as on a fresh machine)
and ``SEGFORMER_STUDIO_STARTUP_PROBE`` set: the app writes when its window first paints (and
whether torch was imported by then), when the engine pages are built, and the longest the event
loop was blocked meanwhile; then it closes itself. Times count from just before the process is
launched, interpreter start included. The baseline, measured in the same run, is the window built
the old way (every page at once, torch imported before the first paint). "Cold" means a new
process; the operating system's file cache is warm after the first start, as it is for a user
who has started the app before. Runs offscreen unless QT_QPA_PLATFORM says otherwise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_GOAL_S, PACKAGED_GOAL_S = 3.0, 8.0
EAGER = "import sys; from gui.app import run_app; sys.exit(run_app(lazy=False))"


def start_once(command: list[str], timeout: float = 300) -> dict[str, float]:
    """One start of ``command``: seconds to the first paint and to the engine pages, the longest
    event-loop block while the engine loaded, and whether torch was in before the paint."""
    with tempfile.TemporaryDirectory() as home:
        probe = Path(home) / "probe.txt"
        env = dict(os.environ, SEGFORMER_STUDIO_HOME=str(Path(home) / "studio"),
                   SEGFORMER_STUDIO_STARTUP_PROBE=str(probe))
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
        launched = time.time()
        subprocess.run(command, cwd=ROOT, env=env, timeout=timeout, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lines = dict(line.split(" ", 1) for line in probe.read_text().splitlines())
    painted, torch_loaded = lines["painted"].split()
    engine, gap = lines["engine"].split()
    return {"paint_s": float(painted) - launched, "engine_s": float(engine) - launched,
            "gap_s": float(gap), "torch_before_paint": float(torch_loaded)}


def measure(command: list[str], starts: int) -> dict[str, float]:
    runs = [start_once(command) for _ in range(starts)]
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def report(results: dict[str, dict[str, float]], baseline: str) -> str:
    base = results[baseline]["paint_s"]
    lines = [f"{'start':<34} {'painted s':>10} {'engine s':>9} {'longest block s':>16} "
             f"{'torch first':>12} {'paint vs base':>14}"]
    for name, r in results.items():
        lines.append(f"{name:<34} {r['paint_s']:>10.2f} {r['engine_s']:>9.2f} {r['gap_s']:>16.2f} "
                     f"{'yes' if r['torch_before_paint'] else 'no':>12} "
                     f"{base / r['paint_s']:>13.1f}×")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5, help="starts per variant (median)")
    parser.add_argument("--exe", type=Path, help="also time the packaged program")
    args = parser.parse_args()
    python = sys.executable
    results = {"eager window (baseline)": measure([python, "-c", EAGER], args.starts),
               "source: python main.py": measure([python, "main.py"], args.starts)}
    if args.exe:
        results["packaged: " + args.exe.name] = measure([str(args.exe)], args.starts)
    print(report(results, "eager window (baseline)"))
    source = results["source: python main.py"]["paint_s"]
    print(f"\nsource start painted in {source:.2f} s (goal < {SOURCE_GOAL_S} s): "
          f"{'met' if source < SOURCE_GOAL_S else 'NOT met'}")
    if args.exe:
        packaged = results["packaged: " + args.exe.name]["paint_s"]
        print(f"packaged start painted in {packaged:.2f} s (goal < {PACKAGED_GOAL_S} s): "
              f"{'met' if packaged < PACKAGED_GOAL_S else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
