"""Every benchmark, one after the other, and one summary table (no pass/fail).

    .venv/bin/python bench/all.py [--quick] [--only intake,history,...] [--out DIR]

Each bench runs in its own process (its output is shown and kept in
``DIR/<bench>.log``, its figures in ``DIR/<bench>.json``); a bench that fails
is reported as such and the others still run. The table gives each figure,
the baseline measured in the same run, their ratio and the goal (issue 7)
where there is one. ``--quick`` runs every bench in under about a minute, on
smaller data (200,000 ledger entries, 100,000 history rows, 5,000 pending): use it
to check the benches work, not for figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# name: (script, full arguments, quick arguments, how its figures are read)
BENCHES: dict[str, tuple[str, list[str], list[str], str]] = {
    "intake": ("intake.py", [], ["--seconds", "3", "--samples", "50"], "json"),
    "slack": ("slack_click.py", [], ["--seconds", "3", "--requests", "100"], "last-line"),
    "teams": ("teams_invoke.py", [], ["--seconds", "3", "--requests", "60"], "last-line"),
    "callbacks": ("callbacks.py", [], ["--quick"], "json"),
    "history": ("history.py", [], ["--quick"], "json"),
    "ledger": ("ledger.py", [], ["--entries", "200000", "--sample", "1000"], "json"),
    "memory": ("memory.py", [], ["--quick"], "json"),
    "replicas": ("replicas.py", [], ["--quick"], "json"),
}


def machine() -> str:
    """CPU model, cores, RAM, OS, Python, SQLite and PostgreSQL versions, load."""
    import sqlite3

    cpu = "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    pg = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        pg = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "test",
                "-Atc",
                "SHOW server_version",
            ],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_kib / 1024 / 1024:.0f} GiB RAM; "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, PostgreSQL {pg}; load average {load}"
    )


def run(name: str, quick: bool, out: Path) -> dict[str, Any] | None:
    """Run one bench, echoing and keeping its output; its figures, or None if it failed."""
    script, full, fast, kind = BENCHES[name]
    data = out / f"{name}.json"
    argv = [sys.executable, str(HERE / script), *(fast if quick else full)]
    if kind == "json":
        argv += ["--json", str(data)]
    print(f"\n=== {name}: {' '.join(argv[1:])}", flush=True)
    began = time.perf_counter()
    lines: list[str] = []
    with (out / f"{name}.log").open("w") as log:
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:  # read as it comes: an unread pipe would block the bench
            print(line, end="", flush=True)
            log.write(line)
            lines.append(line)
        code = proc.wait()
    print(f"=== {name}: {time.perf_counter() - began:.0f}s, exit {code}", flush=True)
    if code != 0:
        return None
    try:
        if kind == "json":
            return dict(json.loads(data.read_text()))
        return dict(json.loads(lines[-1]))
    except (OSError, ValueError, IndexError):
        return None


Row = tuple[str, str, str, str, str]  # figure, value, baseline, ratio, goal


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def rows_for(name: str, r: dict[str, Any], results: dict[str, Any]) -> list[Row]:
    """The summary rows of one bench's figures."""
    out: list[Row] = []
    if name == "intake":
        for be, f in r.items():
            b, i = f["baseline"], f["intake"]
            out.append(
                (
                    f"intake req/s, 32 conns ({be})",
                    f"{i['rps']:,.0f}",
                    f"{b['rps']:,.0f} bare INSERT",
                    _ratio(i["rps"], b["rps"]),
                    ">= 0.5",
                )
            )
        post = (results.get("callbacks") or {}).get("sqlite", {}).get("baseline", {})
        bare = post.get("p99_ms")
        for be, f in r.items():
            for key, label in (("waiter", "same process"), ("waiter_cross", "other replica")):
                if key in f:
                    w = f[key]["p99_ms"]
                    out.append(
                        (
                            f"decision-to-waiter p99, {label} ({be})",
                            f"{w:.1f} ms",
                            f"{bare:.1f} ms bare POST" if bare else "-",
                            f"{w / bare:.1f}x" if bare else "-",
                            "< 50 ms",
                        )
                    )
    elif name in ("slack", "teams"):
        b, c = r["baseline"], r["countersign"]
        unit, bare, goal = (
            ("clicks", "bare bolt ack", "< 100 ms")
            if name == "slack"
            else ("invokes", "bare botbuilder", "< 150 ms")
        )
        label = "click-to-ack" if name == "slack" else "invoke"
        out.append(
            (
                f"{name.title()} {unit}/s, 50 users",
                f"{c['rps']:,.0f}",
                f"{b['rps']:,.0f} {bare}",
                _ratio(c["rps"], b["rps"]),
                ">= 0.5",
            )
        )
        out.append(
            (
                f"{name.title()} {label} p99",
                f"{c['p99_ms']:.0f} ms",
                f"{b['p99_ms']:.0f} ms {bare}",
                f"{c['p99_ms'] / b['p99_ms']:.1f}x",
                goal,
            )
        )
    elif name == "callbacks":
        for be, f in r.items():
            b, c = f["baseline"], f["countersign"]
            out.append(
                (
                    f"decision-to-callback p50 / p99 ({be})",
                    f"{c['p50_ms']:.1f} / {c['p99_ms']:.1f} ms",
                    f"{b['p50_ms']:.1f} / {b['p99_ms']:.1f} ms bare POST",
                    f"{c['p99_ms'] / b['p99_ms']:.1f}x (p99)",
                    "-",
                )
            )
    elif name == "history":
        for be, f in r.items():
            worst = max(f["queries"].items(), key=lambda kv: kv[1]["api_p95_ms"])
            out.append(
                (
                    f"history page p95, {f['rows']:,} requests ({be})",
                    f"{f['api_p95_ms']:.1f} ms",
                    f"{f['bare_p95_ms']:.2f} ms bare SELECT",
                    f"{f['api_p95_ms'] / f['bare_p95_ms']:.1f}x",
                    "-",
                )
            )
            out.append(
                (
                    f"  slowest filter: {worst[0]} ({be})",
                    f"{worst[1]['api_p95_ms']:.1f} ms",
                    f"{worst[1]['bare_p95_ms']:.2f} ms bare SELECT",
                    f"{worst[1]['api_p95_ms'] / worst[1]['bare_p95_ms']:.1f}x",
                    "-",
                )
            )
    elif name == "ledger":
        for be, f in r.items():
            out.append(
                (
                    f"ledger verify, {f['entries']:,} entries ({be})",
                    f"{f['verify_rate']:,.0f}/s",
                    f"{f['scan_rate']:,.0f}/s bare scan",
                    _ratio(f["verify_rate"], f["scan_rate"]),
                    ">= 200,000/s",
                )
            )
    elif name == "memory":
        for be, f in r.items():
            out.append(
                (
                    f"RSS per 10,000 pending, in the DB ({be})",
                    f"+{f['per10k_pending_mib']:.1f} MiB",
                    f"{f['idle_mib']:.0f} MiB idle server",
                    _ratio(f["pending_mib"], f["idle_mib"]),
                    "-",
                )
            )
            out.append(
                (
                    f"RSS per 10,000 pending, each long-polled ({be})",
                    f"+{f['per10k_waiting_mib']:.0f} MiB, CPU {f['waiting_cpu']:.0%}",
                    f"{f['idle_mib']:.0f} MiB, CPU {f['idle_cpu']:.0%} idle",
                    _ratio(f["waiting_mib"], f["idle_mib"]),
                    "-",
                )
            )
    elif name == "replicas":
        one = r.get("1", {}).get("ops")
        for n, f in r.items():
            out.append(
                (
                    f"create+decide ops/s, {n} replica(s), one PostgreSQL",
                    f"{f['ops']:,.0f} (CPU {f['cpu_busy']:.0%})",
                    f"{one:,.0f} with 1 replica" if one else "-",
                    _ratio(f["ops"], one) if one else "-",
                    "-",
                )
            )
    return out


def table(rows: list[Row]) -> str:
    """A Markdown table."""
    head = ("figure", "value", "baseline (same run)", "ratio", "goal")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run the benches, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small, fast runs (a smoke test)")
    parser.add_argument("--only", help=f"comma-separated, of: {', '.join(BENCHES)}")
    parser.add_argument("--out", type=Path, help="logs and JSON go here (default: a new temp dir)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown bench(es): {', '.join(unknown)}")
    out = args.out or Path(f"/tmp/countersign-bench-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    before = machine()
    print(f"machine: {before}\nresults: {out}", flush=True)
    began = time.perf_counter()
    results: dict[str, Any] = {}
    # The callbacks bench gives the bare-POST baseline the waiter rows use: run it first.
    order = sorted(names, key=lambda n: n != "callbacks")
    for name in order:
        results[name] = run(name, args.quick, out)
    rows: list[Row] = []
    failed: list[str] = []
    for name in names:
        r = results[name]
        if r is None:
            failed.append(name)
            continue
        try:
            rows += rows_for(name, r, results)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            failed.append(f"{name} ({type(exc).__name__}: {exc})")
    summary = table(rows)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    text = (
        f"\n{'quick' if args.quick else 'full'} run, {time.perf_counter() - began:.0f}s\n"
        f"machine at start: {before}\nload average at end: {load}\n\n{summary}\n"
    )
    if failed:
        text += f"\nfailed (see their logs in {out}): {', '.join(failed)}\n"
    print(text)
    (out / "summary.md").write_text(text)
    (out / "results.json").write_text(json.dumps(results, default=float, indent=1))


if __name__ == "__main__":
    main()
