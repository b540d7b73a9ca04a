"""A wheel made by hand, for the tests that install a package on a cluster."""

from __future__ import annotations

import pathlib


def tiny_wheel(folder: pathlib.Path) -> pathlib.Path:
    """A pure-Python wheel of a module ``rfmark``, written by hand (no build backend, no network)."""
    import base64
    import hashlib
    import zipfile

    files = {
        "rfmark.py": 'MARK = "wheel-ok"\n',
        "rfmark-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: rfmark\nVersion: 1.0\n",
        "rfmark-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    files["rfmark-1.0.dist-info/RECORD"] = "\n".join(record + ["rfmark-1.0.dist-info/RECORD,,"]) + "\n"
    path = folder / "rfmark-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path
