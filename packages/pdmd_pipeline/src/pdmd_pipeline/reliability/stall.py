"""`python -m pdmd_pipeline.reliability.stall --step K --marker FILE -- <pdmd args>`: run the `pdmd` CLI with a
checkpoint writer that stalls half-way through the temp file of step K (pdmd_pipeline.reliability.faults), so that
a parent process can SIGKILL it in mid-write. Only this process is patched."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pdmd_pipeline.reliability.stall")
    parser.add_argument("--step", type=int, required=True, help="global step whose checkpoint write stalls")
    parser.add_argument("--marker", type=Path, required=True, help="JSON written once the temp file is half full")
    parser.add_argument("pdmd_args", nargs=argparse.REMAINDER, help="-- then the pdmd command line")
    args = parser.parse_args(argv)
    rest = args.pdmd_args[1:] if args.pdmd_args[:1] == ["--"] else args.pdmd_args

    from pdmd_core import checkpoint
    from pdmd_pipeline.reliability.faults import stalling_save

    torch.set_num_threads(1)
    checkpoint.torch.save = stalling_save(torch.save, args.step, args.marker)  # type: ignore[assignment]
    from pdmd_core.cli import app

    sys.argv = ["pdmd", *rest]
    app()


if __name__ == "__main__":
    main()
