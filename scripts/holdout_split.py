#!/usr/bin/env python3
"""Writes a Fashion-MNIST folder whose "test" files are training images 50 000-59 999 (and whose training files
are the first 50 000), so that recipes can be compared without touching the real test set.

Usage: holdout_split.py OUT_DIR [SOURCE_DIR]      then: swiftai train --fmnist OUT_DIR ...
"""
import gzip, os, struct, sys

def read(path):
    raw = gzip.open(path).read()
    magic = struct.unpack(">I", raw[:4])[0]
    dims = struct.unpack(">" + "I" * (magic & 0xFF), raw[4:4 + 4 * (magic & 0xFF)])
    return magic, dims, raw[4 + 4 * len(dims):]

def write(path, magic, dims, data):
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(struct.pack(">I", magic) + struct.pack(">" + "I" * len(dims), *dims) + data)

def main():
    out = sys.argv[1]
    src = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("FMNIST_DIR", "/usr/share/datasets/fashion-mnist")
    os.makedirs(out, exist_ok=True)
    keep = 50_000
    for kind in ("images-idx3", "labels-idx1"):
        magic, dims, data = read(f"{src}/train-{kind}-ubyte.gz")
        item = len(data) // dims[0]
        write(f"{out}/train-{kind}-ubyte.gz", magic, (keep,) + dims[1:], data[:keep * item])
        write(f"{out}/t10k-{kind}-ubyte.gz", magic, (dims[0] - keep,) + dims[1:], data[keep * item:])

if __name__ == "__main__":
    main()
