"""Writes the seed corpora of the fuzzers (Fuzz/corpus/<target>/): a few small valid inputs per reader.

Run with the reference venv from the package root:  /work/venv/bin/python scripts/make_fuzz_corpus.py
Tensors are aranges or seeded; legacy .pth storage keys and safetensors metadata order vary between runs. Images come
from Tests/SwiftAIVisionTests/Fixtures/imageio/, each prefixed with the harness's option byte (bit 0: gray mode,
bit 1: JPEG DCT scaling). Files named regress_* are inputs the fuzzers (or review) found crashing, added by hand;
this script leaves them alone.
"""
import gzip
import io
import json
import os
import struct
from collections import OrderedDict

import torch
from safetensors.torch import save as st_save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "Fuzz", "corpus")


def write(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


def safetensors_file(tensors, metadata=None):
    """safetensors bytes; with no tensors, a header holding only metadata (the library refuses to write one)."""
    if tensors:
        return st_save(tensors, metadata=metadata)
    header = json.dumps({"__metadata__": metadata} if metadata else {}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header


def safetensors_seeds():
    write("safetensors", "dtypes", safetensors_file({
        "f32": torch.arange(6, dtype=torch.float32).reshape(2, 3), "f64": torch.arange(2, dtype=torch.float64),
        "f16": torch.arange(3, dtype=torch.float16), "bf16": torch.arange(2, dtype=torch.bfloat16),
        "i64": torch.arange(2), "i32": torch.arange(2, dtype=torch.int32), "u8": torch.arange(4, dtype=torch.uint8),
        "bool": torch.tensor([True, False]), "scalar": torch.tensor(1.5), "empty": torch.zeros(0, 3)},
        metadata={"note": "seed", "json": "[1, 2]"}))
    write("safetensors", "metadata_only", safetensors_file({}, {"format": "x"}))
    write("safetensors", "one", safetensors_file({"w": torch.ones(1, 1, 2, 2)}))


# The lesson's cnn as `Learner.export` writes it (Sources/SwiftAIDeploy/Bundle.swift).
CNN_SHAPES = [("0.0.weight", [8, 1, 3, 3])] + [
    (f"{i}.{j}", s) for i, (c, cin) in enumerate([(8, 1), (16, 8), (32, 16), (64, 32)])
    for j, s in ([("0.weight", [c, cin, 3, 3])] if i else []) + [(f"1.{p}", [c]) for p in ("bias", "running_mean", "running_var", "weight")]
] + [("4.bias", [10]), ("4.weight", [10, 64, 3, 3])]
VOCAB = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def bundle_metadata(model=None, pipeline=None, input_size=(1, 28, 28), dtype="float16", vocab=VOCAB):
    dumps = lambda v: json.dumps(v, separators=(",", ":"), sort_keys=True)
    return {
        "format": "swiftai-learner", "format_version": "1", "swiftai_version": "0.11.0", "dtype": dtype,
        "model": dumps(model or {"arch": "cnn", "kind": "lesson", "n_in": 1, "n_out": 10}),
        "pipeline": dumps(pipeline or {
            "mode": "gray",
            "item_tfms": [{"type": "Resize", "height": 28, "width": 28, "method": "squish", "pad_mode": "reflection"}],
            "batch_tfms": [{"type": "IntToFloat", "div": 255}, {"type": "Normalize", "mean": [0.28], "std": [0.35]}]}),
        "vocab": dumps(vocab), "loss": dumps({"type": "CrossEntropyLoss", "label_smoothing": 0.1}),
        "input_size": dumps(list(input_size) if input_size else None),
    }


def bundle_seeds():
    g = torch.Generator().manual_seed(0)
    tensors = {name: torch.randn(shape, generator=g).to(torch.float16) for name, shape in CNN_SHAPES}
    for i in range(4):
        tensors[f"{i}.1.num_batches_tracked"] = torch.tensor(5)
    write("bundle", "cnn_float16", safetensors_file(tensors, bundle_metadata()))
    # Metadata only: every check up to loading the weights runs, and the files stay small.
    write("bundle", "augment_pipeline", safetensors_file({}, bundle_metadata(pipeline={
        "mode": "gray",
        "item_tfms": [{"type": "RandomResizedCrop", "height": 32, "width": 32, "min_scale": 0.35, "max_scale": 1,
                       "ratio": [0.75, 1.3333], "val_xtra": 0.14}],
        "batch_tfms": [
            {"type": "IntToFloat", "div": 255},
            {"type": "AffineCoordTransform", "flip": {"kind": "horizontal", "p": 0.5}, "rotate": {"max_degrees": 10, "p": 0.75},
             "zoom": {"min": 1, "max": 1.1, "p": 0.75}, "warp": {"magnitude": 0.2, "p": 0.75}, "size": [28, 28],
             "mode": "bilinear", "pad_mode": "reflection", "align_corners": True},
            {"type": "RandomResizedCropGPU", "size": [28, 28], "min_scale": 0.5, "max_scale": 1, "ratio": [0.75, 1.3333],
             "mode": "bilinear", "valid_scale": 1},
            {"type": "Lighting", "brightness": {"max": 0.2, "p": 0.75}, "contrast": {"max": 0.2, "p": 0.75}},
            {"type": "RandomCrop", "padding": 1, "order": 0}, {"type": "RandomFlip", "p": 0.5, "order": 0},
            {"type": "RandErase", "pct": 0.2, "max_num": 4, "order": 0}, {"type": "RandCopy", "pct": 0.2, "max_num": 4, "order": 0},
            {"type": "Normalize", "mean": [0.28], "std": [0.35]}]}, input_size=None)))
    write("bundle", "vision_learner", safetensors_file({}, bundle_metadata(
        model={"kind": "vision_learner", "arch": "resnet18", "n_in": 3, "n_out": 2, "cut": -2, "lin_ftrs": [512],
               "ps": 0.5, "concat_pool": True, "first_bn": True, "bn_final": False, "y_range": None},
        pipeline={"mode": "rgb", "item_tfms": [{"type": "Resize", "height": 64, "width": 64, "method": "pad", "pad_mode": "zeros"}],
                  "batch_tfms": [{"type": "IntToFloat", "div": 255}]},
        input_size=(3, 64, 64), dtype="float32", vocab=["cat", "dog"])))
    write("bundle", "torchvision", safetensors_file({}, bundle_metadata(
        model={"kind": "torchvision", "arch": "resnet18", "n_in": 1, "n_out": 10}, dtype="bfloat16")))


def idx_seeds():
    def idx(shape, values):
        return bytes([0, 0, 8, len(shape)]) + b"".join(struct.pack(">I", n) for n in shape) + bytes(values)
    images = idx([2, 3, 3], range(18))
    write("idx", "images", images)
    write("idx", "labels", idx([5], [0, 9, 3, 3, 1]))
    write("idx", "images_gz", gzip.compress(images, mtime=0))
    write("idx", "labels_gz_two_members", gzip.compress(idx([2], [1, 2])[:6], mtime=0) + gzip.compress(idx([2], [1, 2])[6:], mtime=0))


def image_seeds():
    fixtures = os.path.join(ROOT, "Tests", "SwiftAIVisionTests", "Fixtures", "imageio")
    for name, option in [("gray8.png", 0), ("rgb8_interlaced.png", 1), ("pal4_trns.png", 0), ("rgba16.png", 1),
                         ("gray16.png", 0), ("gray1.png", 1), ("jpeg420.jpg", 0), ("jpeggray.jpg", 1),
                         ("jpegcmyk.jpg", 2), ("jpegprogressive.jpg", 3), ("orientation6.jpg", 0)]:
        with open(os.path.join(fixtures, name), "rb") as f:
            write("image", os.path.splitext(name)[0] + f"_{option}", bytes([option]) + f.read())


def pth_seeds():
    def save(name, obj, **kw):
        buf = io.BytesIO()
        torch.save(obj, buf, **kw)
        write("pth", name, buf.getvalue())
    sd = OrderedDict([("w", torch.arange(6, dtype=torch.float32).reshape(2, 3)), ("b", torch.arange(2, dtype=torch.float64)),
                      ("n", torch.tensor(3)), ("h", torch.arange(2, dtype=torch.float16))])
    save("zip", sd)
    save("legacy", sd, _use_new_zipfile_serialization=False)
    base = torch.arange(12, dtype=torch.float32)
    nested = {"model": {"fc.weight": base[:6].reshape(2, 3), "t": base.reshape(3, 4).t(), "p": torch.nn.Parameter(base[2:5])},
              "epoch": 3, "lr": 0.1, "names": ["a", "b"], "opt": (torch.tensor([True]), torch.arange(2, dtype=torch.uint8))}
    save("zip_views", nested)
    save("legacy_views", nested, _use_new_zipfile_serialization=False)


if __name__ == "__main__":
    safetensors_seeds()
    bundle_seeds()
    idx_seeds()
    image_seeds()
    pth_seeds()
    for target in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, target))
        print(target, len(files), "files,", sum(os.path.getsize(os.path.join(CORPUS, target, f)) for f in files), "bytes")
