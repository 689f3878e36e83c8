"""Rewrite README.md's sample demo output from a real run, so the README never shows figures
the code no longer prints.

    python tools/readme_demo.py            # run the demo (15-25 min on 2 cores), save, rewrite README
    python tools/readme_demo.py --check    # README's block equals the saved run's (exit 1 if not)

A run saves ``tools/readme_demo/summary.json`` (the demo's own summary) and ``output.txt``
(what it printed, with the machine, date and wall time on top). The README block between
``<!-- demo-output:start -->`` and ``<!-- demo-output:end -->`` is rendered from those two
files alone; tests/test_demo.py checks that the block equals that rendering and that the
saved summary, printed by today's code, gives the saved table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAVED = ROOT / "tools" / "readme_demo"
README = ROOT / "README.md"
START, END = "<!-- demo-output:start -->", "<!-- demo-output:end -->"
#: The line the demo's table starts with (the lines before it are per-stage progress).
TABLE_FROM = "ikem demo finished in "


def machine() -> str:
    """This machine in one line: CPU model, usable cores, OS, Python and torch versions."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{model}, {cores} usable cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def run_demo(extra=()) -> None:
    """Run ``ikem-train demo`` as README's first command does and save what it printed."""
    with tempfile.TemporaryDirectory() as cwd:
        command = [sys.executable, "-c", "from ikem_cli.train import main; main()", "demo",
                   "--out", "demo-output/readme", *extra]
        t0 = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            sys.exit(f"the demo failed (rc {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        summary = json.loads((Path(cwd) / "demo-output" / "readme" / "summary.json").read_text())
    SAVED.mkdir(exist_ok=True)
    (SAVED / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    header = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "wall_seconds": round(seconds),
              "command": "ikem-train demo " + " ".join(extra) if extra else "./demo.sh (ikem-train demo)"}
    (SAVED / "output.txt").write_text(json.dumps(header) + "\n" + done.stdout)


def saved_run() -> tuple[dict, str]:
    """``(header, printed output)`` of the saved run."""
    head, _, printed = (SAVED / "output.txt").read_text().partition("\n")
    return json.loads(head), printed


def table_of(printed: str) -> str:
    """The demo's table: its output from the line starting with :data:`TABLE_FROM`."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(TABLE_FROM))
    return "\n".join(lines[start:])


def seed_seconds(printed: str) -> list[int]:
    """Seconds each seed's stages took, from the demo's progress lines
    (``  seed 0 (1 of 3, runs/seed0): teacher pretraining, six modalities (509 s)``): a seed far
    slower than the others ran beside other work on the machine."""
    totals = {}
    for match in re.finditer(r"^\s*seed (\d+) \(.*\((\d+) s\)$", printed, re.M):
        totals[int(match[1])] = totals.get(int(match[1]), 0) + int(match[2])
    return [totals[seed] for seed in sorted(totals)]


def render_block() -> str:
    """README's block, rendered from the saved run alone."""
    header, printed = saved_run()
    minutes, seconds = divmod(int(header["wall_seconds"]), 60)
    per_seed = " / ".join(f"{s // 60} min {s % 60:02d} s" for s in seed_seconds(printed))
    return (f"{START}\n"
            f"What `{header['command']}` printed on {header['date']} ({minutes} min {seconds:02d} s, pictures "
            f"included; the seeds' stages took {per_seed}) on {header['machine']}; written by "
            f"`python tools/readme_demo.py` from that run:\n\n"
            f"```\n{table_of(printed)}\n```\n{END}")


def readme_block(text: str) -> str:
    """The block currently in README.md's ``text`` (markers included)."""
    if text.count(START) != 1 or text.count(END) != 1:
        raise SystemExit(f"README.md must hold {START} and {END} once each")
    return text[text.index(START):text.index(END) + len(END)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare README's block with the saved run")
    parser.add_argument("demo_args", nargs="*", help="extra arguments for ikem-train demo (after --)")
    args = parser.parse_args(argv)
    text = README.read_text()
    if args.check:
        same = readme_block(text) == render_block()
        print("README's demo block equals the saved run" if same else "README's demo block differs from the saved run")
        return 0 if same else 1
    run_demo(args.demo_args)
    README.write_text(text.replace(readme_block(text), render_block()))
    print(f"README.md rewritten from the run saved in {SAVED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
