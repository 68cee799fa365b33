"""Convert a torchvision state dict to a file that loads without PyTorch.

    python -m mtl_jax.models.convert_weights resnet50-11ad3fa6.pth resnet50.npz
    python -m mtl_jax.models.convert_weights resnet18.pth resnet18.safetensors --overwrite

The output holds the same torchvision names and arrays (floats as float32), as `.npz` or
`.safetensors`; `--config.model.init_from=OUT` then loads it (`mtl_jax.models.pretrained`).
Reading a `.pth` needs torch (`pip install 'mtl-jax[torch]'`); writing does not.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mtl_jax.models import pretrained

PROG = "python -m mtl_jax.models.convert_weights"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Convert a torchvision state dict to .npz or .safetensors."
    )
    parser.add_argument("input", help=f"state dict file ({', '.join(pretrained.SUFFIXES)})")
    parser.add_argument("output", help="file to write (.npz or .safetensors)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return parser


def convert(source: str | Path, target: str | Path, *, overwrite: bool = False) -> str:
    """Writes the state dict at `source` to `target`; returns a one-line summary.

    Raises:
      FileExistsError: `target` exists and not `overwrite`.
      ValueError: `target` is neither `.npz` nor `.safetensors`, or `source` is unreadable.
      ImportError: `source` is a torch file and torch is not installed.
    """
    target = Path(target)
    if target.suffix.lower() not in (".npz", ".safetensors"):
        raise ValueError(f"{str(target)!r}: the output must end in .npz or .safetensors")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{str(target)!r} exists; pass --overwrite to replace it")
    state_dict = pretrained.read_state_dict(source)
    try:
        what = f"torchvision ResNet-{pretrained.state_dict_depth(state_dict, source=source)}"
    except ValueError:
        what = "not a torchvision ResNet-18/50 state dict"
    # Written beside the target and renamed, so a failed write leaves no partial file.
    temporary = target.with_name(f".{target.stem}.{os.getpid()}.partial{target.suffix}")
    try:
        pretrained.write_state_dict(state_dict, temporary)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return f"wrote {len(state_dict)} arrays ({what}) to {str(target)!r}"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the converter on `argv` (default `sys.argv[1:]`); returns the exit status."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        print(convert(args.input, args.output, overwrite=args.overwrite))
    except (OSError, ValueError, ImportError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
