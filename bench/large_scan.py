"""A large scan through ``python -m ml.analyze``: time, cells found and peak memory.

The scan is a mosaic of BCCD fields (``$LEUKOLAB_DATASETS/bccd`` or ``../shared/datasets/bccd``;
generated fields where there is none), ``--side`` pixels square, saved as a JPEG in a temporary
folder. ``ml.analyze`` runs on it in a child process, with the slide's statistics (its default), at
the fields' own magnification (``--rescale 1``); its peak resident memory is the child's, as the
kernel counts it, and "x array" is that peak less the peak of a one-field run (the models and the
program), in multiples of the scan's size as an RGB array.

    python bench/large_scan.py --classifier runs/default --side 20000
    python bench/large_scan.py --classifier runs/default --side 8000 12000 20000
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def mosaic(side: int, path: Path) -> int:
    """Write a ``side x side`` JPEG of BCCD fields side by side (generated ones without BCCD); return
    how many fields it holds."""
    from PIL import Image

    from ml.imageio import load_image
    from ml.localization.data import bccd_root

    files = sorted((bccd_root() / "JPEGImages").glob("*.jpg"))
    if files:
        fields = lambda k: load_image(files[k % len(files)])  # noqa: E731
    else:
        from ml.localization.synthetic import synthetic_field

        fields = lambda k: synthetic_field(seed=k, n_wbc=1)[0]  # noqa: E731
    out = np.zeros((side, side, 3), np.uint8)
    k = 0
    for y in range(0, side, 480):
        for x in range(0, side, 640):
            f = fields(k)
            k += 1
            h, w = min(480, side - y, f.shape[0]), min(640, side - x, f.shape[1])
            out[y:y + h, x:x + w] = f[:h, :w]
    Image.MAX_IMAGE_PIXELS = None
    Image.fromarray(out).save(path, quality=90)
    return k


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classifier", required=True, help="classifier run directory or checkpoint")
    p.add_argument("--localizer", default="classical")
    p.add_argument("--side", type=int, nargs="+", default=[20000], help="the scans' sides in pixels (each its own run)")
    args = p.parse_args(argv)
    if any(s < 640 or s > 25000 for s in args.side):
        p.error("--side must be between 640 and 25000 pixels")
    print(f"{'side':>6} {'Mpixel':>7} {'file MB':>8} {'fields':>6} {'cells':>6} {'s':>6} {'peak GB':>8} {'x array':>8}")
    # first one field: the peak of the models and the program themselves, which the scans' peaks are read against
    sides = [640] + sorted(set(args.side) - {640})
    baseline = None
    for side in sides:
        with tempfile.TemporaryDirectory() as tmp:
            scan = Path(tmp) / f"scan{side}.jpg"
            n_fields = mosaic(side, scan)
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            t = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "ml.analyze", "--localizer", args.localizer, "--classifier",
                                  args.classifier, "--rescale", "1", "--json", str(scan)],
                                 cwd=REPO, capture_output=True, text=True)
            seconds = time.perf_counter() - t
            if run.returncode != 0:
                print(run.stderr, file=sys.stderr)
                return run.returncode
            peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            if peak_kb <= before:  # a smaller child than an earlier one: the kernel keeps the largest
                print(f"(the peak of side {side} is hidden by an earlier, larger run: run it alone)", file=sys.stderr)
            cells = len(json.loads(run.stdout)["images"][0]["cells"])
            baseline = peak_kb if baseline is None else baseline
            array_kb = side * side * 3 / 1e3
            print(f"{side:>6} {side * side / 1e6:>7.1f} {scan.stat().st_size / 1e6:>8.1f} {n_fields:>6} {cells:>6} "
                  f"{seconds:>6.1f} {peak_kb / 1e6:>8.2f} {(peak_kb - baseline) / array_kb:>8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
