#!/usr/bin/env python3
"""Builds the image-decoding fixtures of Tests/SwiftAIVisionTests/Fixtures/imageio (needs numpy, Pillow, safetensors).

Writes tiny PNGs of every colour type and bit depth (encoded here, since PIL cannot write most of them), JPEGs made
by PIL (4:2:0, 4:4:4, gray, CMYK, progressive, EXIF orientations 2-8 in both byte orders, one larger for DCT
scaling), a PNG header claiming 30000x30000 pixels, and reference.safetensors holding PIL's decodes as uint8 HWC:
`<file>.rgb` = Image.open(f).convert("RGB"), `<file>.gray` = .convert("L") (but for orientation*.jpg; JPEGs are
EXIF-transposed first, as SwiftAI does); `scaled<d>.rgb` = the large JPEG decoded with PIL's draft() at scale 1/d.

One deliberate difference: for 16-bit gray PNGs PIL's I;16 -> RGB/L conversion clips values above 255 to 255;
the references hold the high byte instead, as SwiftAI decodes them (and as PIL does for 16-bit RGB).

  /work/venv/bin/python scripts/make_imageio_fixtures.py
"""
import io, os, struct, zlib
import numpy as np
from PIL import Image, ImageOps
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "SwiftAIVisionTests", "Fixtures", "imageio")
W, H = 13, 9
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def pack_rows(samples, depth):
    """Scanlines (filter byte 0) of an (h, w, c) array of samples at `depth` bits."""
    out = b""
    for row in samples:
        flat = row.reshape(-1).astype(np.uint32)
        if depth == 16:
            data = flat.astype(">u2").tobytes()
        elif depth == 8:
            data = flat.astype(np.uint8).tobytes()
        else:
            per = 8 // depth
            padded = np.zeros(-(-len(flat) // per) * per, np.uint32)
            padded[:len(flat)] = flat
            groups = padded.reshape(-1, per)
            shifts = np.array([8 - depth * (k + 1) for k in range(per)], np.uint32)
            data = (groups << shifts).sum(axis=1).astype(np.uint8).tobytes()
        out += b"\x00" + data
    return out


def png(samples, depth, colour_type, palette=None, trns=None, interlace=False):
    h, w = samples.shape[:2]
    if interlace:
        raw = b"".join(pack_rows(samples[y0::dy, x0::dx], depth) for x0, y0, dx, dy in ADAM7
                       if samples[y0::dy, x0::dx].size)
    else:
        raw = pack_rows(samples, depth)
    body = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, int(interlace)))
    if palette is not None:
        body += chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    if trns is not None:
        body += chunk(b"tRNS", trns)
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def png_cases(rng):
    def s(depth, c):
        return rng.integers(0, 1 << depth, size=(H, W, c), dtype=np.int64)
    pal = rng.integers(0, 256, size=(16, 3))
    pal256 = rng.integers(0, 256, size=(256, 3))
    alphas = bytes(rng.integers(0, 256, size=16).astype(np.uint8))
    return {
        "gray1": png(s(1, 1), 1, 0), "gray2": png(s(2, 1), 2, 0), "gray4": png(s(4, 1), 4, 0),
        "gray8": png(s(8, 1), 8, 0), "gray16": png(s(16, 1), 16, 0),
        "gray8_trns": png(s(8, 1), 8, 0, trns=struct.pack(">H", 7)),
        "graya8": png(s(8, 2), 8, 4), "graya16": png(s(16, 2), 16, 4),
        "pal1": png(s(1, 1), 1, 3, palette=pal[:2]), "pal2": png(s(2, 1), 2, 3, palette=pal[:4]),
        "pal4": png(s(4, 1), 4, 3, palette=pal), "pal8": png(s(8, 1), 8, 3, palette=pal256),
        "pal4_trns": png(s(4, 1), 4, 3, palette=pal, trns=alphas),
        "rgb8": png(s(8, 3), 8, 2), "rgb16": png(s(16, 3), 16, 2),
        "rgb8_trns": png(s(8, 3), 8, 2, trns=struct.pack(">HHH", 1, 2, 3)),
        "rgba8": png(s(8, 4), 8, 6), "rgba16": png(s(16, 4), 16, 6),
        "rgb8_interlaced": png(s(8, 3), 8, 2, interlace=True),
        "pal4_interlaced": png(s(4, 1), 4, 3, palette=pal, interlace=True),
        "gray16_interlaced": png(s(16, 1), 16, 0, interlace=True),
    }


def photo(rng, w, h):
    """A smooth colourful picture with some texture (compresses to a couple of KB)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    base = np.stack([np.sin(6 * xx + 1) * 0.5 + 0.5, np.cos(5 * yy + 2 * xx) * 0.5 + 0.5, xx * yy], -1) * 230 + 12
    return (base + rng.normal(0, 10, size=(h, w, 3))).clip(0, 255).astype(np.uint8)


def exif(orientation, big_endian):
    e = ">" if big_endian else "<"
    tiff = (b"MM\x00\x2a" if big_endian else b"II\x2a\x00") + struct.pack(e + "I", 8)
    tiff += struct.pack(e + "H", 1) + struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(e + "I", 0)
    return b"Exif\x00\x00" + tiff


def jpeg(im, **options):
    b = io.BytesIO()
    im.save(b, "JPEG", **options)
    return b.getvalue()


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {name + ".png": data for name, data in png_cases(rng).items()}
    pic = Image.fromarray(photo(rng, 45, 37))
    files["jpeg420.jpg"] = jpeg(pic, quality=90)
    files["jpeg444.jpg"] = jpeg(pic, quality=90, subsampling=0)
    files["jpeggray.jpg"] = jpeg(pic.convert("L"), quality=90)
    files["jpegcmyk.jpg"] = jpeg(pic.convert("CMYK"), quality=90)
    files["jpegprogressive.jpg"] = jpeg(pic, quality=90, progressive=True)
    for o in range(2, 9):
        files[f"orientation{o}.jpg"] = jpeg(pic, quality=90, exif=exif(o, big_endian=o % 2 == 1))
    files["large420.jpg"] = jpeg(Image.fromarray(photo(rng, 100, 60)), quality=90)

    refs = {}
    for name, data in files.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        im = Image.open(io.BytesIO(data))
        im.load()
        if name.endswith(".jpg"):
            im = ImageOps.exif_transpose(im)
        rgb, gray = np.asarray(im.convert("RGB")), np.asarray(im.convert("L"))
        if im.mode in ("I;16", "I;16B", "I"):  # 16-bit gray: the high byte, where PIL clips (see the docstring)
            gray = (np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8)
            rgb = np.repeat(gray[:, :, None], 3, axis=2)
        refs[name + ".rgb"] = np.ascontiguousarray(rgb)
        if not name.startswith("orientation"):
            refs[name + ".gray"] = np.ascontiguousarray(gray[:, :, None])
    for d in (2, 4, 8):
        im = Image.open(io.BytesIO(files["large420.jpg"]))
        im.draft("RGB", (im.size[0] // d, im.size[1] // d))
        assert im.size == ((100 + d - 1) // d, (60 + d - 1) // d), im.size
        refs[f"scaled{d}.rgb"] = np.ascontiguousarray(np.asarray(im.convert("RGB")))

    # A PNG whose header claims 30000x30000 RGB pixels (no pixel data): must be refused before allocating.
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    with open(os.path.join(OUT, "huge_header.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    save_file(refs, os.path.join(OUT, "reference.safetensors"), metadata={"source": "scripts/make_imageio_fixtures.py"})
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"{len(files) + 1} image files and reference.safetensors in {OUT}: {total} bytes")


if __name__ == "__main__":
    main()
