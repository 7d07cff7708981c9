"""Benchmark: the offline pre-flight of a 100,000-row CSV campaign (a figure, not a test).

    .venv/bin/python -m tests.benchmarks.campaign_check [--rows 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import random
import tempfile
import time
from pathlib import Path

from processors.cli.main import main as cli
from processors.tools.loadgen import Workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    workload = Workload(seed=7, recipients=50_000)
    rng = random.Random(7)
    tmp = Path(tempfile.mkdtemp(prefix="campaign-"))
    source = tmp / "campaign.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["recipient", "template"])
        for _ in range(args.rows):
            writer.writerow([rng.choice(workload.recipients),
                             rng.choice(["spring_sale", "order_update", "login_code"])])
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        code = cli(["check", str(source), "--tenant", "acme", "--language", "en_US",
                    "--output", str(tmp / "out.jsonl"), "--report", str(tmp / "report.html")])
    seconds = time.perf_counter() - started
    assert code == 0
    print(f"{args.rows:,} rows checked in {seconds:.1f} s ({args.rows / seconds:,.0f} rows/s), "
          f"report {tmp / 'report.html'}")


if __name__ == "__main__":
    main()
