"""Whether two runs' metrics.csv agree bit for bit, timing columns aside.

Used to show that a restructuring leaves behaviour identical: the same command (a fixed
seed, e.g. the smoke preset) before and after, then

    python tools/compare_metrics.py runs/before/metrics.csv runs/after/metrics.csv

Prints "identical" (exit 0) or the first differing (row, column, before, after) (exit 1).
"""

import csv
import sys

NONDETERMINISTIC = ("Time/", "Meta/ModelStepsPerSec")


def main(before: str, after: str) -> int:
    a, b = (list(csv.DictReader(open(p))) for p in (before, after))
    if len(a) != len(b):
        print(f"different row counts: {len(a)} vs {len(b)}")
        return 1
    for i, (ra, rb) in enumerate(zip(a, b, strict=True)):
        for key in sorted(set(ra) | set(rb)):
            if not key.startswith(NONDETERMINISTIC) and ra.get(key) != rb.get(key):
                print(f"row {i + 1}, {key}: {ra.get(key)} vs {rb.get(key)}")
                return 1
    print(f"identical ({len(a)} rows, {len(a[0]) if a else 0} columns)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tools/compare_metrics.py BEFORE.csv AFTER.csv")
    sys.exit(main(sys.argv[1], sys.argv[2]))
