#!/usr/bin/env python3
"""Write the hostile archive corpus to fuzz/corpus/archive/: the seeds of the
archive fuzz target, and a test of the normal suite (tests/hostile.rs) that
deploys each one and expects a refusal with nothing changed.

    fuzz/make-hostile-corpus.py      (stdlib only; rerun to regenerate)
"""

import gzip
import hashlib
import io
import os
import tarfile
import warnings
import zipfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "archive")


def tar_bytes(members, compress=False, fmt=tarfile.GNU_FORMAT):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for info, data in members:
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buffer.getvalue()
    return gzip.compress(raw, mtime=0) if compress else raw


def member(name, data=b"x", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def zip_bytes(entries, compression=zipfile.ZIP_DEFLATED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            archive.writestr(info, data)
    return buffer.getvalue()


def noise(size):
    """Bytes that do not compress, the same on every run."""
    out, block = bytearray(), b"zdeploy"
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def corpus():
    index = member("index.php", b"<?php echo 'evil';")
    yield "zip-slip.tar.gz", tar_bytes([index, member("../../evil.php")], compress=True)
    yield "zip-slip.zip", zip_bytes([("index.php", b"x"), ("../../evil.php", b"x")])
    yield "absolute-path.tar", tar_bytes([index, member("/tmp/zdeploy-evil.php")])
    yield "absolute-path.zip", zip_bytes([("/tmp/zdeploy-evil.php", b"x")])
    yield "symlink-escape.tar", tar_bytes([index, member("etc", kind=tarfile.SYMTYPE, link="/etc")])
    yield "symlink-escape-relative.tar", tar_bytes(
        [index, member("up", kind=tarfile.SYMTYPE, link="../../..")])
    yield "symlink-then-file.tar", tar_bytes([
        index,
        member("dir", kind=tarfile.SYMTYPE, link="/tmp"),
        member("dir/zdeploy-evil.php"),
    ])
    yield "symlink-chain-escape.tar", tar_bytes([
        index,
        member("a", kind=tarfile.DIRTYPE),
        member("root", kind=tarfile.SYMTYPE, link="a/.."),
        member("esc", kind=tarfile.SYMTYPE, link="root/../x"),
    ])
    yield "hardlink-escape.tar", tar_bytes([index, member("passwd", kind=tarfile.LNKTYPE, link="/etc/passwd")])
    yield "hardlink-missing.tar", tar_bytes([index, member("ghost", kind=tarfile.LNKTYPE, link="nowhere.php")])
    yield "char-device.tar", tar_bytes([index, member("null", kind=tarfile.CHRTYPE)])
    yield "block-device.tar", tar_bytes([index, member("disk", kind=tarfile.BLKTYPE)])
    yield "fifo.tar", tar_bytes([index, member("pipe", kind=tarfile.FIFOTYPE)])
    yield "duplicate-entries.tar", tar_bytes([index, member("index.php", b"<?php echo 'second';")])
    yield "duplicate-entries.zip", zip_bytes([("a.php", b"1"), ("a.php", b"2")])
    yield "file-then-dir.tar", tar_bytes([index, member("x"), member("x/y")])
    # 64 MiB of zeros in a few hundred KiB: stopped by --max-archive-size.
    yield "zip-bomb.zip", zip_bytes([("index.php", b"x"), ("zeros.bin", b"\0" * (64 << 20))])
    yield "tar-bomb.tar.gz", tar_bytes([index, member("zeros.bin", b"\0" * (64 << 20))], compress=True)
    # A pax header claiming a path of a megabyte.
    long = member("index.php", b"x")
    long[0].pax_headers = {"path": "a/" * (128 << 10)}
    yield "oversized-pax-header.tar", tar_bytes([long], fmt=tarfile.PAX_FORMAT)
    # A GNU long name far beyond any filesystem's limit.
    yield "oversized-long-name.tar", tar_bytes([member("n" * 1000)])
    whole = tar_bytes([index, member("lib/a.php", noise(50000))], compress=True)
    yield "truncated.tar.gz", whole[: len(whole) // 2]
    whole_zip = zip_bytes([("index.php", noise(50000))])
    yield "truncated.zip", whole_zip[: len(whole_zip) // 2]
    yield "garbage.tar", b"\x00not a tar archive at all\xff" * 40


def main():
    warnings.simplefilter("ignore")  # zipfile warns about the duplicates we want
    os.makedirs(OUT, exist_ok=True)
    for name, data in corpus():
        with open(os.path.join(OUT, name), "wb") as out:
            out.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
