"""Make PyPI's torchvision 0.28 (a CUDA build) importable beside CPU torch 2.13.

Its C ops cannot load next to CPU torch, and `_meta_registrations.py` then dies registering fake
kernels for ops that do not exist. vLLM's InternVL code only needs torchvision's image transforms,
so register those two kernels the way the file registers all the others: only when the op exists.
Idempotent; does nothing when the import already works. (PyTorch's own CPU index ships a CPU
torchvision that needs none of this: Dockerfile.cpu uses it.)
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

FIXES = {
    '@torch.library.register_fake("torchvision::nms")': '@register_meta("nms")',
    '@torch.library.register_fake("torchvision::qnms")': '@register_meta("qnms")',
}


def imports_cleanly() -> bool:
    probe = [sys.executable, "-c", "import torchvision.transforms"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def main() -> int:
    if imports_cleanly():
        return 0
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return 0  # not installed: nothing to fix
    path = Path(spec.origin).parent / "_meta_registrations.py"
    text = path.read_text()
    for old, new in FIXES.items():
        text = text.replace(old, new)
    path.write_text(text)
    if not imports_cleanly():
        print(f"torchvision still fails to import after patching {path}", file=sys.stderr)
        return 1
    print(f"patched {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
