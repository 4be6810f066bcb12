#!/usr/bin/env python3
"""Two image folders for the transfer experiment (issue #10), as symlinks into `swiftai data fashion-mnist-images`:
A = the first five Fashion-MNIST classes (T-shirt/top, Trouser, Pullover, Dress, Coat) for pretraining,
B = the other five (Sandal, Shirt, Sneaker, Bag, Ankle boot) with few training images per class for fine-tuning.
Both validate on the test images of their classes. The choice of files is fixed by the seed.

Usage: transfer_folders.py PNG_DIR OUT_DIR [--a-train N] [--a-valid N] [--b-train N] [--b-valid N] [--seed S]
"""
import argparse, os, random

A = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat"]
B = ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

def link(src, dst, classes, n_train, n_valid, rng):
    for split, n in (("train", n_train), ("test", n_valid)):
        for c in classes:
            names = sorted(os.listdir(f"{src}/{split}/{c}"))
            rng.shuffle(names)
            os.makedirs(f"{dst}/{split}/{c}", exist_ok=True)
            for name in names[:n]:
                os.symlink(os.path.abspath(f"{src}/{split}/{c}/{name}"), f"{dst}/{split}/{c}/{name}")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("png"); ap.add_argument("out")
    ap.add_argument("--a-train", type=int, default=1000); ap.add_argument("--a-valid", type=int, default=200)
    ap.add_argument("--b-train", type=int, default=100); ap.add_argument("--b-valid", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    link(a.png, f"{a.out}/A", A, a.a_train, a.a_valid, rng)
    link(a.png, f"{a.out}/B", B, a.b_train, a.b_valid, rng)

if __name__ == "__main__":
    main()
