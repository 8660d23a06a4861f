"""The load test in one command: start the service, run the locust users headless, print the table.

    .venv/bin/python loadtest/run.py --users 32 --spawn-rate 8 --run-time 60s --out out/loadtest

Prints count, failures and p50/p95/p99 per request ("CreateSession", "round 1", "round 2", ...)
and rounds per second; keeps locust's CSV (``<out>/locust_stats.csv``, ``_failures``, ``_history``)
and its log (``<out>/locust.log``); exits 1 when any request failed. ``--host`` aims the users at a
running server instead of starting one. Without ``--data`` the users hold ``data/phantoms``
(``make data``) or, when that is absent, a small phantom set generated at ``data/loadtest-phantoms``.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

from model.data.phantoms.generate import default_splits, generate_dataset
from serving.front.server import ServerOptions
from serving.runtime.service import BackgroundService, ServiceOptions

REPO = Path(__file__).resolve().parents[1]
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
FULL_DATA = REPO / "data" / "phantoms"
SMALL_DATA = REPO / "data" / "loadtest-phantoms"


def dataset(path: str | None, splits: str) -> Path:
    """The dataset root the users draw conversations from; generates the small one when needed."""
    names = [s.strip() for s in splits.split(",")]

    def has(root: Path) -> bool:
        return any((root / f"{s}.json").is_file() for s in names)

    if path is not None:
        if not has(Path(path)):
            raise SystemExit(f"no {' or '.join(names)} split under {path}")
        return Path(path)
    if has(FULL_DATA):
        return FULL_DATA
    if not has(SMALL_DATA):
        print(f"no {FULL_DATA} (make data): generating a small phantom set at {SMALL_DATA}")
        small = {k: v for k, v in default_splits(0.04).items() if k in names}
        generate_dataset(SMALL_DATA, seed=0, splits=small, workers=1, progress=False)
    return SMALL_DATA


def run_locust(address: str, root: Path, out: Path, *, users: int, spawn_rate: float, run_time: str,
               splits: str = "test_hard,test", token: str | None = None) -> int:
    """Run the users headless against ``address``; writes ``out/locust_*.csv`` and ``out/locust.log``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "locust_stats.csv").unlink(missing_ok=True)  # never report an earlier run's figures
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
               "--users", str(users), "--spawn-rate", str(spawn_rate), "--run-time", run_time,
               "--host", address, "--csv", str(out / "locust"), "--data", str(root), "--splits", splits]
    env = {**os.environ, **({"MEDIROUND_TOKEN": token} if token else {})}  # not on the command line: ps shows it
    with open(out / "locust.log", "w") as log:
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode


def _order(row: dict) -> tuple[int, int]:
    name = row["Name"]
    if name.startswith("round "):
        return 1, int(name.split()[1])
    return (0 if name == "CreateSession" else 2), 0


def read_stats(out: Path) -> tuple[list[dict], dict]:
    """locust's stats CSV: the rows per request name in dialogue order, and the aggregated row."""
    with open(out / "locust_stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    total = next(r for r in rows if r["Name"] == "Aggregated")
    return sorted((r for r in rows if r is not total), key=_order), total


def report(rows: list[dict], total: dict) -> str:
    """The table: count, failures and percentiles per request, then rounds per second."""
    lines = [f"{'request':<14}{'count':>8}{'fail':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"]
    lines += [f"{r['Name']:<14}{r['Request Count']:>8}{r['Failure Count']:>6}{r['50%']:>9}{r['95%']:>9}{r['99%']:>9}"
              for r in rows]
    rounds = sum(int(r["Request Count"]) for r in rows if r["Name"].startswith("round "))
    # the aggregated row's rate spans the whole run; each name's own rate only its first to last request
    seconds = int(total["Request Count"]) / max(float(total["Requests/s"]), 1e-9)
    lines.append(f"rounds: {rounds} in {seconds:.0f} s, {rounds / max(seconds, 1e-9):.1f} rounds/s; "
                 f"failed requests: {total['Failure Count']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=16, help="concurrent dialogues")
    parser.add_argument("--spawn-rate", type=float, default=4, help="users started per second")
    parser.add_argument("--run-time", default="60s", help="how long to run (locust syntax: 30s, 2m)")
    parser.add_argument("--out", default="out/loadtest", help="folder for locust's CSV and log")
    parser.add_argument("--data", help="dataset root (default: data/phantoms, else a small generated set)")
    parser.add_argument("--splits", default="test_hard,test", help="splits whose conversations the users hold")
    parser.add_argument("--host", help="a running server's address (default: start one on loopback)")
    parser.add_argument("--token", help="bearer token (also required by the started server)")
    args = parser.parse_args(argv)
    root, out = dataset(args.data, args.splits), Path(args.out)
    run = dict(users=args.users, spawn_rate=args.spawn_rate, run_time=args.run_time, splits=args.splits,
               token=args.token)

    if args.host:
        code = run_locust(args.host, root, out, **run)
    else:
        options = ServiceOptions(server=ServerOptions(address="127.0.0.1:0", token=args.token))
        with BackgroundService(options) as service:
            print(f"service at {service.address}; {args.users} users hold {root.name} dialogues for {args.run_time}")
            code = run_locust(service.address, root, out, **run)

    if not (out / "locust_stats.csv").is_file():
        print(f"locust wrote no stats (exit code {code}): see {out / 'locust.log'}", file=sys.stderr)
        return 1
    rows, total = read_stats(out)
    print(report(rows, total))
    with open(out / "locust_failures.csv", newline="") as f:
        for r in csv.DictReader(f):
            print(f"failed: {r['Name']}: {r['Error']} (x{r['Occurrences']})")
    if code:
        print(f"locust exit code {code}: see {out / 'locust.log'}", file=sys.stderr)
    return 1 if code or int(total["Failure Count"]) else 0


if __name__ == "__main__":
    sys.exit(main())
