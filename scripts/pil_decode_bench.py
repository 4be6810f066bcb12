#!/usr/bin/env python3
"""Mean milliseconds per image for PIL's decode as fastai does it (`Image.open(p)`, `.load()`, `.convert("RGB")`)
over the JPEG and PNG files of a folder (searched recursively), single-threaded, after one untimed warm-up pass.

  python3 scripts/pil_decode_bench.py /tmp/pets/images --n 300
"""
import argparse, os, time
from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--n", type=int, default=0, help="use only the first N files (sorted); 0 = all")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes; the best is reported")
    a = ap.parse_args()
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(a.dir) for f in names
                   if f.lower().endswith((".jpg", ".jpeg", ".png")))
    if a.n:
        files = files[:a.n]
    if not files:
        raise SystemExit(f"no .jpg/.jpeg/.png files under {a.dir}")

    def decode_all():
        pixels = 0
        for p in files:
            with Image.open(p) as im:
                im.load()
                rgb = im.convert("RGB")
                pixels += rgb.size[0] * rgb.size[1]
        return pixels

    pixels = decode_all()
    best = float("inf")
    for _ in range(a.repeat):
        t = time.perf_counter()
        decode_all()
        best = min(best, time.perf_counter() - t)
    print(f"PIL {Image.__version__}: {len(files)} images, {pixels / len(files) / 1e3:.0f} kpixel mean, "
          f"{best / len(files) * 1e3:.3f} ms/image (best of {a.repeat})")


if __name__ == "__main__":
    main()
