"""What a manifest records to reproduce a run: checksums of the input files and the accelerator."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    stat = os.stat(path)
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def input_checksum(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """``{"path", "sha256", "bytes"}`` of a local input file; for a folder (parquet, ``save_to_disk``)
    the digest of its files' names and digests, in name order, and ``files``. ``None`` for what is
    not on the local disk (a hub id, a URL)."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        return {"path": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for file in files:
            digest.update(f"{file.relative_to(path).as_posix()}\0{file_sha256(file)}\n".encode())
        return {"path": str(path), "sha256": digest.hexdigest(), "bytes": sum(f.stat().st_size for f in files),
                "files": len(files)}
    return None


def _driver_version() -> str | None:
    try:
        import pynvml  # optional: nvidia-ml-py

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        found = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=15, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip().splitlines()[0] if found.stdout.strip() else None


@functools.lru_cache(maxsize=1)
def _accelerator() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if info["cuda_available"]:
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cudnn"] = torch.backends.cudnn.version()
        info["driver"] = _driver_version()
    return info


def accelerator() -> dict[str, Any] | None:
    """GPU names, CUDA (of torch), cuDNN and driver versions. Only where torch is already loaded
    (an extraction): a CPU-only selection does not import it to say that it did not use it."""
    if "torch" not in sys.modules:
        return None
    return _accelerator()


__all__ = ["accelerator", "file_sha256", "input_checksum"]
