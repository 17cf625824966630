"""Generator of ``doubling_classes_snapshot.bin``: a partition's snapshot taken by the store layout whose
size classes doubled (class ``k`` held rings of ``16 << k`` samples; main at de29262), in the middle of
the one-width history's burst, so its rings sit in two classes (16 and 512 samples).

    git archive de29262 | tar -x -C /tmp/old && cd /tmp/old && PYTHONPATH=/tmp/old python REPO/tests/unit/data/doubling_classes_history.py REPO/tests/unit/data/doubling_classes_snapshot.bin

It must only use APIs that existed then.
"""

from __future__ import annotations

import sys

from tests.unit.data.one_width_history import T0, write_snapshot

SPLIT = T0 + 3 * 60_000 + 30_000  # after the burst's two batches of 150 samples


if __name__ == "__main__":
    live = write_snapshot(SPLIT, sys.argv[1])
    print("ring sizes", sorted({live.store.capacity_of(r) for r in live.store.live_rows().tolist()}), "series", len(live.store))
