"""``python -m anomalens.simulation GOOD_FOLDER OUT.png``: a contact sheet of simulated anomalies of every kind."""

from __future__ import annotations

from collections.abc import Sequence

from anomalens.simulation.grid import examples_from_folder, save_example_grid


def main(argv: Sequence[str] | None = None) -> int:
    """Write a contact sheet of simulated anomalies (every kind) on images of a folder of good images."""
    import argparse

    from anomalens.simulation.simulator import KINDS

    parser = argparse.ArgumentParser(prog="python -m anomalens.simulation", description=main.__doc__)
    parser.add_argument("folder", help="folder of good images")
    parser.add_argument("output", help="PNG file to write")
    parser.add_argument("--per-kind", type=int, default=2)
    parser.add_argument("--kind", dest="kinds", action="append", choices=KINDS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tile-size", type=int, default=256)
    args = parser.parse_args(argv)
    examples = examples_from_folder(args.folder, args.kinds or KINDS, args.per_kind, args.seed)
    print(save_example_grid(examples, args.output, columns=args.per_kind, tile_size=args.tile_size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
