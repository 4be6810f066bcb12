"""Writes the small .pth fixtures of Tests/SwiftAICoreTests/PthTests.swift into Tests/SwiftAICoreTests/Fixtures/pth/.

Run with the reference venv from the package root:  /work/venv/bin/python scripts/make_pth_fixtures.py
Deterministic: tensors are aranges, so the tests hard-code the values they expect. Also writes
shared_summary.safetensors: torch's own reading (float64 sum, shape, dtype) of every tensor in
../shared/fixtures/tv_basic_1111.pth and lesson_cnn_legacy.pth, when that folder exists.
"""
import io
import os
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict

import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "SwiftAICoreTests", "Fixtures", "pth")
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "fixtures")


def save(obj, name, **kw):
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return write(name, buf.getvalue())


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    return data


def entries(zip_bytes):
    z = zipfile.ZipFile(io.BytesIO(zip_bytes))
    return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def rezip(items, compression=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in items:
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data, compress_type=compression)
    return buf.getvalue()


def zip64(items):
    """A stored zip whose every size and offset is in zip64 fields (central directory, locator, end record)."""
    out, central = bytearray(), bytearray()
    for name, data in items:
        n, crc, offset = name.encode(), zlib.crc32(data), len(out)
        extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(n), len(extra))
        out += n + extra + data
        cextra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), offset)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                               len(n), len(cextra), 0, 0, 0, 0, 0xFFFFFFFF) + n + cextra
    cd_offset = len(out)
    out += central
    z64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(items), len(items), len(central), cd_offset)
    out += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(out)


def replace(items, name_suffix, data):
    return [(n, data if n.endswith(name_suffix) else d) for n, d in items]


class Storage:
    """A storage record for hand-made pickles: its persistent id is what torch.save writes."""

    def __init__(self, key, numel, typ=torch.FloatStorage):
        self.key, self.numel, self.typ = key, numel, typ


class Rebuild:
    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args + (False, OrderedDict()))


class StatePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.typ, obj.key, "cpu", obj.numel)
        return None


def hand_made(name, obj, records):
    buf = io.BytesIO()
    StatePickler(buf, protocol=2).dump(obj)
    arch = name.rsplit(".", 1)[0]
    items = [(f"{arch}/data.pkl", buf.getvalue()), (f"{arch}/byteorder", b"little"), (f"{arch}/version", b"3\n")]
    items += [(f"{arch}/data/{k}", v) for k, v in records.items()]
    return write(name, rezip(items))


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/swiftai_pth_pwned",))


def main():
    os.makedirs(OUT, exist_ok=True)
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    # Views: transposed, sliced with an offset, expanded (stride 0), and a row sharing x's storage.
    save({"x": x, "t": x.t(), "s": x[1:, 1:3], "e": torch.arange(3.0).expand(2, 3), "row": x[2]}, "views.pth")
    dtypes = {
        "f16": torch.arange(4, dtype=torch.float16) / 2, "bf16": torch.arange(4, dtype=torch.bfloat16) * 3,
        "i64": torch.tensor([-5, 0, 2**40]), "bool": torch.tensor([True, False, True]),
        "f64": torch.arange(3, dtype=torch.float64) / 4, "i32": torch.tensor([-7, 7], dtype=torch.int32),
        "u8": torch.tensor([0, 200, 255], dtype=torch.uint8), "scalar": torch.tensor(3, dtype=torch.int64),
        "empty": torch.zeros(0, 3),
    }
    plain = save(dtypes, "dtypes.pth")
    save({"w": torch.arange(3, dtype=torch.int8)}, "int8.pth")
    model = torch.nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.copy_(torch.arange(6.0).reshape(3, 2))
        model.bias.copy_(torch.tensor([-1.0, 0.0, 1.0]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3, "name": "run1",
          "params": [torch.tensor([1.0]), (torch.tensor([2.0]),)]}, "checkpoint.pth")
    save({"w": torch.nn.Parameter(torch.ones(2))}, "parameter.pth")
    save({"x": x, "t": x.t(), "h": torch.arange(4, dtype=torch.float16), "n": torch.tensor(7)}, "legacy.pth",
         _use_new_zipfile_serialization=False)
    save(torch.nn.Sequential(torch.nn.Linear(2, 2)), "module.pth")
    save({"w": torch.ones(2), "evil": Evil()}, "system_reduce.pth")
    save({"w": torch.ones(2)}, "protocol4.pth", pickle_protocol=4)
    # No elements, but sizes whose product overflows 64 bits (found by Fuzz/: it used to trap making the strides).
    save({"w": torch.empty_strided((0, 1 << 40, 1 << 40), (0, 0, 0))}, "empty_huge_sizes.pth",
         _use_new_zipfile_serialization=False)
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), os.path.join(OUT, "torchscript.pt"))

    items = entries(plain)
    write("bigendian.pth", rezip(replace(items, "/byteorder", b"big")))
    write("zip64.pth", zip64(items))
    write("compressed.pth", rezip(items, zipfile.ZIP_DEFLATED))
    key0 = [n for n, _ in items if "/data/" in n][0]
    write("short_storage.pth", rezip([(n, d[:3] if n == key0 else d) for n, d in items]))
    # Tensors whose size, stride or offset reach past their 4-element storage.
    four = struct.pack("<4f", 1, 2, 3, 4)
    hand_made("out_of_bounds.pth", OrderedDict(w=Rebuild(Storage("0", 4), 0, (2, 3), (3, 1))), {"0": four})
    hand_made("offset_past_end.pth", OrderedDict(w=Rebuild(Storage("0", 4), 4, (1,), (1,))), {"0": four})
    hand_made("missing_record.pth", OrderedDict(w=Rebuild(Storage("9", 4), 0, (4,), (1,))), {"0": four})
    hand_made("huge_stride0.pth", OrderedDict(w=Rebuild(Storage("0", 4), 0, (1 << 40,), (0,))), {"0": four})
    # Hand-written data.pkl: a protocol-4 STACK_GLOBAL, and a BINUNICODE claiming 2 GB.
    empty = entries(hand_made("stack_global.pth", OrderedDict(), {}))
    pkl = b"\x80\x02X\x0b\x00\x00\x00collectionsX\x0b\x00\x00\x00OrderedDict\x93)R."
    write("stack_global.pth", rezip(replace(empty, "/data.pkl", pkl)))
    write("huge_string.pth", rezip(replace(empty, "/data.pkl", b"\x80\x02X\xff\xff\xff\x7fabc")))

    if os.path.isdir(SHARED):
        summary, meta = {}, {}
        for short, name in [("tv", "tv_basic_1111.pth"), ("lesson", "lesson_cnn_legacy.pth")]:
            sd = torch.load(os.path.join(SHARED, name), weights_only=False)
            for k, v in sd.items():
                summary[f"{short}/sum/{k}"] = v.double().sum().reshape(())
                meta[f"{short}/shape/{k}"] = ",".join(map(str, v.shape))
                meta[f"{short}/dtype/{k}"] = str(v.dtype).removeprefix("torch.")
            meta[f"{short}/count"] = str(len(sd))
        summary["tv/fc.bias"] = torch.load(os.path.join(SHARED, "tv_basic_1111.pth"))["fc.bias"].clone()
        summary["lesson/0.1.running_var"] = torch.load(os.path.join(SHARED, "lesson_cnn_legacy.pth"),
                                                       weights_only=False)["0.1.running_var"].clone()
        save_file(summary, os.path.join(OUT, "shared_summary.safetensors"), metadata=meta)


if __name__ == "__main__":
    main()
