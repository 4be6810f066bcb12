#!/usr/bin/env python3
"""Writes Tests/SwiftAIVisionTests/Fixtures/augment/augment.safetensors: fastai 2.8.12's batch augmentations
(AffineCoordTfm with flip/dihedral, rotate, zoom, warp; RandomResizedCropGPU; Brightness/Contrast; Normalize) on
small random uint8 batches, for fixed draws, so the Swift kernel can be checked without torch.

Run with the reference venv: /work/venv/bin/python scripts/make_augment_fixtures.py

Each case `NAME` stores `NAME.out` (float32 [B, C, h, w], what fastai returns for the float batch x/255) and, where
the case has per-item draws, `NAME.draws` (float64 [B, 7]: dihedral index, angle in degrees, zoom, zoom column
and row centre, warp x, warp y) or `NAME.lighting` (float64 [B, 2]: brightness, contrast). The metadata entry
`NAME` holds the settings as `key=value` pairs separated by `;` (src, h, w, pad, align, mode, train, crop=top,left,h,w).
"""
import os, random
import torch, torch.nn.functional as F
from safetensors.torch import save_file
from fastai.vision.augment import (Flip, Dihedral, Rotate, Zoom, Warp, Brightness, Contrast, RandomResizedCropGPU,
                                   setup_aug_tfms, _prepare_mat, find_coeffs, apply_perspective)
from fastai.torch_core import TensorImage
from fastai.data.transforms import Normalize
from fastai.vision.core import imagenet_stats

torch.manual_seed(0)
random.seed(0)
OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "SwiftAIVisionTests", "Fixtures", "augment")
tensors, meta = {}, {}
x = torch.randint(0, 256, (2, 3, 20, 17), dtype=torch.uint8)
xbig = torch.randint(0, 256, (2, 3, 60, 53), dtype=torch.uint8)
tensors["x"], tensors["xbig"] = x, xbig
SRC = {"x": x, "xbig": xbig}


def img(name): return TensorImage(SRC[name].float() / 255)


def settings(**kw): return ";".join(f"{k}={v}" for k, v in kw.items())


def affine_case(name, src, draws, h, w, pad="reflection", align=True, mode="bilinear", dihedral=False, warp=True, train=True):
    """fastai's composed AffineCoordTfm (as `setup_aug_tfms` builds it from aug_transforms' list) with pinned draws."""
    d = torch.tensor(draws, dtype=torch.float64)
    if not warp: d[:, 5:] = 0
    kw = dict(size=(h, w), mode=mode, pad_mode=pad, align_corners=align)
    first = Dihedral(p=1., draw=[int(v) for v in d[:, 0]], **kw) if dihedral else Flip(p=1., draw=[int(v) for v in d[:, 0]], **kw)
    tfms = [first]
    if warp: tfms.append(Warp(p=1., draw_x=d[:, 5].tolist(), draw_y=d[:, 6].tolist(), **kw))
    tfms.append(Rotate(p=1., draw=d[:, 1].tolist(), **kw))
    tfms.append(Zoom(p=1., draw=d[:, 2].tolist(), draw_x=d[:, 3].tolist(), draw_y=d[:, 4].tolist(), **kw))
    tfm = setup_aug_tfms(tfms)[0]
    out = tfm(img(src), split_idx=0 if train else 1)
    tensors[name + ".out"] = out.float().contiguous()
    tensors[name + ".draws"] = d
    meta[name] = settings(src=src, h=h, w=w, pad=pad, align=int(align), mode=mode, train=int(train))


# Rows: dihedral/flip index, angle (deg), zoom, col pct, row pct, warp x, warp y.
D = [[1, 12.5, 1.25, 0.2, 0.6, 0.15, -0.2], [0, -7.0, 0.9, 0.7, 0.1, -0.1, 0.05]]
affine_case("affine", "x", D, 11, 13, warp=False)
for pad in ["reflection", "zeros", "border"]:
    for align in [True, False]:
        affine_case(f"warp_{pad}_{int(align)}", "x", D, 11, 13, pad=pad, align=align)
affine_case("dihedral", "x", [[3, 5.0, 1.1, 0.5, 0.5, 0.0, 0.1], [6, -3.0, 1.0, 0.3, 0.9, 0.12, 0.0]], 11, 13, dihedral=True)
affine_case("upscale", "x", D, 31, 29)
affine_case("upscale_zeros_0", "x", D, 31, 29, pad="zeros", align=False)
affine_case("nearest", "x", D, 11, 13, pad="zeros", mode="nearest")
affine_case("area", "xbig", D, 11, 13)                       # d = 2.04 > z: area-pooled first
affine_case("valid_area", "xbig", D, 11, 13, train=False)    # identity matrix, resized with the area step
affine_case("valid_same", "x", D, 20, 17, train=False)       # identity at the input size


def crop_case(name, src, h, w, train, seed, min_scale=0.35, ratio=(3/4, 4/3), valid_scale=1.):
    random.seed(seed)
    t = RandomResizedCropGPU((h, w), min_scale=min_scale, ratio=ratio, valid_scale=valid_scale)
    out = t(img(src), split_idx=0 if train else 1)
    tensors[name + ".out"] = out.float().contiguous()
    meta[name] = settings(src=src, h=h, w=w, train=int(train), crop=f"{t.tl[0]},{t.tl[1]},{t.cp_size[0]},{t.cp_size[1]}")


crop_case("crop", "x", 11, 13, True, 3)
crop_case("crop_valid", "x", 11, 13, False, 0, valid_scale=0.9)
crop_case("crop_area", "xbig", 11, 13, True, 1, min_scale=0.5)


def composed_case(name, src, draws, crop, h, w):
    """Crop (top, left, height, width) of the affine output, composed into one map: RandomResizedCropGPU's grid
    (align_corners=True over the crop) taken to the affine output's normalised frame, then fastai's matrix and warp."""
    xi = img(src)
    d = torch.tensor(draws, dtype=torch.float64)
    bs, _, H, W = xi.shape
    tfms = [Flip(p=1., draw=[int(v) for v in d[:, 0]]), Warp(p=1., draw_x=d[:, 5].tolist(), draw_y=d[:, 6].tolist()),
            Rotate(p=1., draw=d[:, 1].tolist()), Zoom(p=1., draw=d[:, 2].tolist(), draw_x=d[:, 3].tolist(), draw_y=d[:, 4].tolist())]
    tfm = setup_aug_tfms(tfms)[0]
    tfm.before_call(xi, split_idx=0)
    top, left, ch, cw = crop
    base = F.affine_grid(torch.eye(3)[:2].expand(bs, 2, 3), (bs, 3, h, w), align_corners=True)
    px = (base[..., 0] + 1) / 2 * (cw - 1) + left
    py = (base[..., 1] + 1) / 2 * (ch - 1) + top
    g = torch.stack([px / (W - 1) * 2 - 1, py / (H - 1) * 2 - 1], -1)
    coords = g.view(bs, -1, 2) @ tfm.mat[:, :, :2].transpose(1, 2) + tfm.mat[:, :, 2].unsqueeze(1)
    coords = tfm.coord_fs[0](coords.view(bs, h, w, 2))
    out = F.grid_sample(xi, coords, mode="bilinear", padding_mode="reflection", align_corners=True)
    tensors[name + ".out"] = out.float().contiguous()
    tensors[name + ".draws"] = d
    meta[name] = settings(src=src, h=h, w=w, crop=",".join(map(str, crop)))


composed_case("composed", "x", D, (3, 2, 14, 12), 11, 13)

# Lighting on a float batch with exact 0 and 1 values.
xl = torch.rand(2, 3, 5, 7)
xl[0, 0, 0, :3] = torch.tensor([0., 1., 0.5])
L = [[0.42, 0.83], [0.58, 1.2]]
lt = setup_aug_tfms([Brightness(p=1., draw=[v[0] for v in L]), Contrast(p=1., draw=[v[1] for v in L])])[0]
tensors["xl"] = xl
tensors["lighting.out"] = lt(TensorImage(xl.clone()), split_idx=0).float().contiguous()
tensors["lighting.lighting"] = torch.tensor(L, dtype=torch.float64)
meta["lighting"] = settings(src="xl")

norm = Normalize.from_stats(*imagenet_stats, cuda=False)
tensors["normalize.out"] = norm(TensorImage(xl.clone())).float().contiguous()

os.makedirs(OUT, exist_ok=True)
save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, "augment.safetensors"), metadata=meta)
print("wrote", len(tensors), "tensors")
