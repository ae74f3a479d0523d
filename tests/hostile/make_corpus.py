#!/usr/bin/env python3
"""Writes Lethe's corpus of crafted hostile files, one per class of attack on its
readers (issue #22), and `manifest.json` describing how to feed each to the CLI.

Usage: make_corpus.py OUT_DIR RESOURCES_DIR

The files are made here rather than committed: several are decompression bombs
whose point is that they are small on disk and huge once inflated. Each entry of
the manifest names the file, its class, the `lethe` arguments that read it
({corpus} and {resources} are replaced by the folders) and a phrase the refusal
must contain. Needs Python 3 and PyTorch (the project's .venv has both).
"""

import json
import os
import struct
import sys
import zipfile
import zlib

import torch

ZEROS = bytes(1 << 20)


def stream_zeros(f, total):
    left = total
    while left > 0:
        n = min(left, len(ZEROS))
        f.write(ZEROS[:n])
        left -= n


def torch_zip(path, pickle_bytes):
    """A torch.save-style archive (STORED entries) around a crafted pickle."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")


def unicode(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def self_referring_pickle():
    # {k0: <itself>, k1: <itself>, ...}: a walk without a visited set never ends.
    body = b"\x80\x02}q\x00("
    for i in range(32):
        body += unicode(f"k{i}") + b"h\x00"
    return body + b"u."


def deep_pickle(depth=100_000):
    # ((((...)))): 100,000 nested tuples from 100 KB; dropped recursively, they
    # overflow the stack.
    return b"\x80\x02)" + b"\x85" * depth + b"."


def many_values_pickle(count=1_000_000):
    # [[[[...]]]]: a million nested lists from 2 MB, half a gigabyte of values.
    return b"\x80\x02" + b"]" * count + b"a" * (count - 1) + b"."


def memo_amplification_pickle():
    # One 1 MiB bytes object, memoised, then referred to 100,000 times:
    # 100 GiB if every reference is a copy.
    blob = bytes(1 << 20)
    body = b"\x80\x03B" + struct.pack("<I", len(blob)) + blob + b"q\x00"
    body += b"](" + b"h\x00" * 100_000 + b"e."
    return body


def pt_zip_bomb(path, inflated=512 << 20):
    # A real torch.save archive whose storage entry is DEFLATED to a few hundred
    # KiB and claims hundreds of MiB (torch itself only writes STORED entries).
    tmp = path + ".tmp"
    torch.save({"w": torch.zeros(4)}, tmp)
    with zipfile.ZipFile(tmp) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith("/data/0"):
                zi = zipfile.ZipInfo(info.filename)
                zi.compress_type = zipfile.ZIP_DEFLATED
                with dst.open(zi, "w", force_zip64=True) as f:
                    stream_zeros(f, inflated)
            else:
                dst.writestr(info.filename, src.read(info.filename))
    os.remove(tmp)


def npy_header(dtype, shape):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        dtype,
        "".join(f"{d}, " for d in shape),
    )
    header = header.encode()
    pad = 64 - (10 + len(header) + 1) % 64
    header += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def npz_bomb(path, inflated=512 << 20):
    n = inflated // 784
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            f.write(npy_header("|u1", (n, 1, 28, 28)))
            stream_zeros(f, n * 784)
        with z.open("y.npy", "w", force_zip64=True) as f:
            f.write(npy_header("<i8", (n,)))
            stream_zeros(f, n * 8)


def idx_gzip_bomb(folder, inflated=512 << 20):
    import gzip

    os.makedirs(folder, exist_ok=True)
    n = inflated // 784
    with gzip.open(os.path.join(folder, "train-images-idx3-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 28, 28))
        stream_zeros(f, n * 784)
    with gzip.open(os.path.join(folder, "train-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">II", 0x801, n))
        stream_zeros(f, n)


def expanded_view(path):
    # One float of storage seen as a 50,000 x 50,000 tensor (stride 0): 10 GB
    # once made contiguous.
    torch.save({"w": torch.zeros(1).expand(50_000, 50_000)}, path)


def arch_before_weights(path, demo):
    # The demo model's weights with metadata asking for an MLP of 100,000-wide
    # layers (10^10 parameters) that the weights do not match.
    raw = open(demo, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["lethe"])
    meta["arch"]["backbone"]["hidden"] = [100_000, 100_000]
    header["__metadata__"]["lethe"] = json.dumps(meta)
    new = json.dumps(header).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def labels_beyond_samples(path):
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8).numpy()
    y = torch.tensor([0, 1, 2, 3_000_000_000], dtype=torch.int64).numpy()
    import numpy as np

    np.savez(path, x=x, y=y)


def png_huge_dimensions(folder):
    # A valid PNG (CRCs right) whose header claims 100,000 x 100,000 RGB pixels
    # (30 GB decoded) with a few bytes of image data.
    os.makedirs(folder, exist_ok=True)

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    png += chunk(b"IDAT", zlib.compress(bytes(1024))) + chunk(b"IEND", b"")
    with open(os.path.join(folder, "photo.png"), "wb") as f:
        f.write(png)


def main():
    out, resources = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    p = lambda name: os.path.join(out, name)
    demo_model = os.path.join(resources, "demo", "leaky-mlp.safetensors")

    torch_zip(p("self-referring.pt"), self_referring_pickle())
    torch_zip(p("deep-nesting.pt"), deep_pickle())
    torch_zip(p("many-values.pt"), many_values_pickle())
    torch_zip(p("memo-amplification.pt"), memo_amplification_pickle())
    pt_zip_bomb(p("zip-bomb.pt"))
    npz_bomb(p("zip-bomb.npz"))
    idx_gzip_bomb(p("gzip-bomb-idx"))
    expanded_view(p("expanded-view.pt"))
    arch_before_weights(p("huge-architecture.safetensors"), demo_model)
    labels_beyond_samples(p("labels-beyond-samples.npz"))
    png_huge_dimensions(p("huge-png/person"))
    with open(p("forget-pandas-index.csv"), "w") as f:
        # pandas' to_csv(header=False): the row index first, then the sample.
        f.write("0,17\n1,42\n2,99\n")

    ckpt = ["checkpoint", "inspect"]
    data = ["data", "inspect"]
    manifest = [
        ("self-referring.pt", "pickle containers that refer to themselves", ckpt, "no tensors"),
        ("deep-nesting.pt", "pickle nested 100,000 deep", ckpt, "nested more than"),
        ("many-values.pt", "pickle whose values dwarf it", ckpt, "times the pickle's size"),
        ("memo-amplification.pt", "memo/DUP amplification", ckpt, "memo"),
        ("zip-bomb.pt", "compressed archive entry (zip bomb) in a .pt", ckpt, "compressed"),
        ("zip-bomb.npz", "compressed archive entry (zip bomb) in a .npz", data, "x.npy"),
        ("gzip-bomb-idx", "gzipped IDX bomb", data, "gzip"),
        ("expanded-view.pt", "tensor view larger than its storage", ckpt, "storage"),
        (
            "huge-architecture.safetensors",
            "architecture in metadata built before checked against the weights",
            [
                "evaluate",
                "--data",
                "{resources}/demo/mnist10k-2k.npz",
                "--forget",
                "{resources}/demo/forget-2k.txt",
                "--checkpoint",
            ],
            "do not fit",
        ),
        ("labels-beyond-samples.npz", "labels far beyond the sample count", data, "label"),
        ("huge-png", "image header claiming huge dimensions", data, "dimensions"),
        (
            "forget-pandas-index.csv",
            "two-column forget list without a header (pandas index first)",
            [
                "evaluate",
                "--checkpoint",
                "{resources}/demo/leaky-mlp.safetensors",
                "--data",
                "{resources}/demo/mnist10k-2k.npz",
                "--forget",
            ],
            "header",
        ),
    ]
    entries = []
    for name, klass, args, expect in manifest:
        entries.append(
            {
                "file": name,
                "class": klass,
                "args": args + ["{corpus}/" + name],
                "expect": expect,
            }
        )
    with open(p("manifest.json"), "w") as f:
        json.dump(entries, f, indent=1)


if __name__ == "__main__":
    main()
