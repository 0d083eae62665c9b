"""Summarise py-spy ``--format raw`` (collapsed stacks) files: where the samples go.

    python bench/profile_summary.py /tmp/dispatched_bench/prof-*.txt [--top 25] [--match dispatched]

Prints the inclusive share of the top frames (a frame counted once per sample) and the
self ("leaf") share of the top functions.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter


def load(paths: list[str]) -> list[tuple[list[str], int]]:
    stacks = []
    for path in paths:
        with open(path) as fh:
            for line in fh:
                line = line.rstrip()
                if not line:
                    continue
                stack, _, count = line.rpartition(" ")
                frames = [
                    re.sub(r" \(/.*?(site-packages/|work/[^/]+/|python3\.11/)", " (", f)
                    for f in stack.split(";")
                ]
                stacks.append((frames, int(count)))
    return stacks


def summarize(
    paths: list[str],
    top: int = 25,
    match: str | None = None,
    idle: tuple[str, ...] = (
        "wait (threading",
        "select (selectors",
        "accept (socket",
        "poll (selectors",
        "_worker (concurrent",
    ),
) -> str:
    stacks = load(paths)
    total = sum(c for _, c in stacks)
    busy = [(f, c) for f, c in stacks if not any(i in f[-1] for i in idle)]
    busy_total = sum(c for _, c in busy)
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for frames, count in busy:
        for frame in set(frames):
            if match is None or match in frame:
                inclusive[frame] += count
        leaf[frames[-1]] += count
    lines = [f"samples: {total}, busy (not idle-waiting): {busy_total}"]
    lines.append("inclusive % of busy samples:")
    for frame, count in inclusive.most_common(top):
        lines.append(f"  {100 * count / max(busy_total, 1):5.1f}%  {frame}")
    lines.append("self (leaf) % of busy samples:")
    for frame, count in leaf.most_common(top):
        lines.append(f"  {100 * count / max(busy_total, 1):5.1f}%  {frame}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default=None)
    args = parser.parse_args()
    print(summarize(args.paths, args.top, args.match))


if __name__ == "__main__":
    main()
