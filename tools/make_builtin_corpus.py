"""Make the built-in corpus (gatedrnn/data/builtin/python-docs-3.11.txt.gz) from Debian's
python3.11-doc package, once; the package ships the result, so nothing is made or fetched at
run time.

    apt-get download python3.11-doc          # 3.11.2-6+deb12u9 (Debian 12)
    dpkg-deb -x python3.11-doc_*.deb /tmp/pydoc
    python tools/make_builtin_corpus.py /tmp/pydoc/usr/share/doc/python3.11/html/_sources

The text: every reStructuredText source of the Python 3.11 documentation (``*.rst.txt``: the
tutorial, the library and language references, the HOWTOs, the FAQ, What's New), as UTF-8
bytes, documents in the order of the SHA-256 of their relative paths, a fixed pseudo-random
order, so that the held-out last 10 % is a spread of documents rather than one section of the
manual (sorted by name it would be What's New alone). The documentation is under the PSF
License Version 2 (its license.rst is part of the text). gzip at level 9 with no time stamp,
so the same sources give the same file; the result's SHA-256 is pinned in
gatedrnn/data/corpus.py (``BUILTIN_SHA256``) and this script checks it.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "gatedrnn" / "data" / "builtin" / "python-docs-3.11.txt.gz"


def corpus_bytes(sources: Path) -> bytes:
    paths = sorted((p.relative_to(sources).as_posix() for p in sources.rglob("*.rst.txt")),
                   key=lambda rel: hashlib.sha256(rel.encode()).hexdigest())
    if not paths:
        raise SystemExit(f"{sources}: no *.rst.txt files (give the html/_sources folder of python3.11-doc)")
    return b"".join((sources / rel).read_bytes() for rel in paths)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    raw = corpus_bytes(Path(argv[0]))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "wb") as f:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=f, mtime=0) as gz:
            gz.write(raw)
    print(f"{OUT}: {len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()} ({OUT.stat().st_size} compressed)")
    sys.path.insert(0, str(OUT.parents[3]))
    from gatedrnn.data.corpus import BUILTIN_SHA256

    if hashlib.sha256(raw).hexdigest() != BUILTIN_SHA256:
        print(f"warning: this is not the pinned corpus (BUILTIN_SHA256 {BUILTIN_SHA256[:12]}…): other sources?")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
