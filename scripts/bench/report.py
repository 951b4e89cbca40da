"""Print the benchmark table from the raw per-run results written by bench.sh.

    report.py RESULTS_TSV INPUT_ROWS INPUT_BYTES

RESULTS_TSV has one line per run: job, engine, run, status, wall_s, cpu_s,
rss_kib, out_bytes, out_rows. Wall and CPU (user + system) seconds are medians over
the runs, peak RSS the maximum. CPU seconds help when other processes compete.
"""

import statistics
import sys
from collections import defaultdict

ENGINE = "eventpipe"
RSS_LIMIT_MIB = 1024
# Jobs eventpipe runs against its own other job, within a factor of its wall time: the Delta
# conversion against the Parquet one; the conversion by event day, which reads its inputs a second
# time to count every row's fate, too.
AGAINST_OWN = {"convert-delta": ("convert", 1.10), "convert-event-time": ("convert", 1.50)}


def load(path):
    runs = defaultdict(list)
    with open(path) as f:
        for line in f:
            job, engine, _run, status, wall, cpu, rss, out_bytes, out_rows = line.split("\t")
            runs[(job, engine)].append({
                "ok": status == "ok", "wall": float(wall), "cpu": float(cpu), "rss": int(rss),
                "out_bytes": out_bytes, "out_rows": out_rows.strip(),
            })
    return runs


def summarise(runs):
    summary = {}
    for key, rs in runs.items():
        summary[key] = {
            "ok": all(r["ok"] for r in rs),
            "wall": statistics.median(r["wall"] for r in rs),
            "cpu": statistics.median(r["cpu"] for r in rs),
            "rss_mib": max(r["rss"] for r in rs) / 1024,
            "out_bytes": rs[-1]["out_bytes"],
            "out_rows": rs[-1]["out_rows"],
        }
    return summary


def print_table(summary, rows, in_bytes):
    head = ("job", "engine", "wall s", "rows/s", "in MB/s", "cpu s", "peak RSS MiB", "out bytes",
            "out rows")
    fmt = "{:<18} {:<10} {:>8} {:>12} {:>8} {:>7} {:>13} {:>12} {:>9}"
    print(fmt.format(*head))
    for (job, engine), s in summary.items():
        if not s["ok"]:
            print(fmt.format(job, engine, "FAILED", *[""] * 6))
            continue
        wall = s["wall"]
        print(fmt.format(
            job, engine, f"{wall:.2f}", f"{rows / wall:,.0f}", f"{in_bytes / 1e6 / wall:.1f}",
            f"{s['cpu']:.2f}", f"{s['rss_mib']:.0f}", f"{int(s['out_bytes']):,}", s["out_rows"],
        ))


def compare(summary):
    """Ratios and the verdict for each job that eventpipe ran."""
    jobs = list(dict.fromkeys(job for job, _ in summary))
    verdicts = []
    for job in jobs:
        ours = summary.get((job, ENGINE))
        peers = {e: s for (j, e), s in summary.items() if j == job and e != ENGINE and s["ok"]}
        if ours and not ours["ok"]:
            print(f"{job}: {ENGINE} FAILED")
            verdicts.append(False)
            continue
        if ours and job in AGAINST_OWN:
            base_job, limit = AGAINST_OWN[job]
            base = summary.get((base_job, ENGINE))
            if base and base["ok"]:
                ratio = ours["wall"] / base["wall"]
                verdicts.append(ratio <= limit and ours["rss_mib"] < RSS_LIMIT_MIB)
                print(f"{job}: {ENGINE} {ours['wall']:.2f} s, {ratio:.2f}x its {base_job} -> "
                      f"{'within' if ratio <= limit else 'NOT within'} {limit:.2f}x")
            continue
        if not ours or not peers:
            continue
        for engine, s in peers.items():
            print(f"{job}: {ENGINE}/{engine}  wall {ours['wall'] / s['wall']:.2f}x"
                  f"  cpu {ours['cpu'] / s['cpu']:.2f}x  RSS {ours['rss_mib'] / s['rss_mib']:.2f}x")
        fastest_engine, fastest = min(peers.items(), key=lambda p: p[1]["wall"])
        fast_enough = ours["wall"] <= fastest["wall"]
        small_enough = ours["rss_mib"] < RSS_LIMIT_MIB
        verdicts.append(fast_enough and small_enough)
        print(f"{job}: {ENGINE} {ours['wall']:.2f} s vs fastest peer {fastest_engine}"
              f" {fastest['wall']:.2f} s -> {'as fast or faster' if fast_enough else 'slower'};"
              f" peak RSS {ours['rss_mib']:.0f} MiB -> "
              f"{'under' if small_enough else 'NOT under'} 1 GiB")
    if not any(engine == ENGINE for _, engine in summary):
        print(f"VERDICT: not available ({ENGINE} was not benchmarked)")
    elif len(verdicts) == len(jobs):
        met = all(verdicts)
        own = ", ".join(f"{job} within {limit:.2f}x {base}" for job, (base, limit) in AGAINST_OWN.items())
        print(f"VERDICT: every {ENGINE} job at least as fast as the fastest competitor ({own}) and under"
              f" 1 GiB RSS: {'yes' if met else 'no'}")
    else:
        print(f"VERDICT: not available ({ENGINE} or its competitors did not run every job)")


def main():
    path, rows, in_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    summary = summarise(load(path))
    print_table(summary, rows, in_bytes)
    print()
    compare(summary)


if __name__ == "__main__":
    main()
