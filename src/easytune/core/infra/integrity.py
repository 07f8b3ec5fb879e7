"""Content hashes of files a later run trusts (cached study runs): a sha256 manifest written beside them.

A manifest is a text file in ``sha256sum`` format (``<hex digest>  <file name>`` per line; the files live in the
manifest's folder), so ``sha256sum -c <manifest>`` checks it by hand too. It is written (atomically) after the files
it lists, so a crash in between leaves files without a manifest, which :func:`verify_manifest` refuses like a
mismatch: a reader uses files only when every listed file exists and hashes to its digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from easytune.core.infra.atomic import atomic_write

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of the bytes of ``path`` (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(manifest: str | Path, files: Iterable[str | Path]) -> None:
    """Hash every file of ``files`` (all in the manifest's folder) and write ``manifest`` atomically."""
    manifest = Path(manifest)
    lines = []
    for file in files:
        file = Path(file)
        if file.parent.resolve() != manifest.parent.resolve():
            raise ValueError(f"{file}: not in the manifest's folder {manifest.parent}")
        lines.append(f"{sha256_file(file)}  {file.name}\n")
    atomic_write(manifest, lambda tmp: tmp.write_text("".join(lines)))


def verify_manifest(manifest: str | Path, files: Iterable[str | Path]) -> str | None:
    """None when ``manifest`` lists every file of ``files`` and each hashes to its digest, else the reason, naming the
    file (a missing or unreadable manifest, a file it does not list, a missing file, a digest mismatch)."""
    manifest = Path(manifest)
    if not manifest.exists():
        return f"{manifest} (its content hashes) does not exist"
    expected: dict[str, str] = {}
    try:
        for number, line in enumerate(manifest.read_text().splitlines(), start=1):
            digest, sep, name = line.partition("  ")
            if not sep or len(digest) != 64 or not name:
                return f"{manifest}:{number}: not a '<sha256>  <file>' line"
            expected[name] = digest.lower()
    except (OSError, UnicodeDecodeError) as exc:
        return f"{manifest}: unreadable ({exc})"
    for file in files:
        file = Path(file)
        if file.name not in expected:
            return f"{file}: not listed in {manifest}"
        if not file.exists():
            return f"{file}: missing"
        actual = sha256_file(file)
        if actual != expected[file.name]:
            return f"{file}: content hash {actual[:16]}... differs from {expected[file.name][:16]}... in {manifest}"
    return None
