"""``anomalens classify``: name defect regions by the user's own types, learned from a few examples.

``TAXONOMY_DIR`` is either a saved taxonomy (``taxonomy.json`` + ``embeddings.safetensors``, see
:meth:`~anomalens.explanation.taxonomy.Taxonomy.save`) or a folder of labelled examples, one sub-folder per type
(MVTec layout or plain; see :meth:`~anomalens.explanation.taxonomy.Taxonomy.from_folders`). The regions come from
the detector (``--model``: every region of an anomalous verdict), else from ``--mask``, else the whole image.

Wire it into the main parser with ``add_parser(subparsers)``; the parsed namespace's ``func`` runs it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from anomalens import api
from anomalens.cli.output import console
from anomalens.explanation.taxonomy import load_taxonomy


def cmd_classify(args: argparse.Namespace) -> int:
    from anomalens.data import collect_images

    if args.mask is not None and args.model is not None:
        console.print("[red]--mask and --model exclude each other[/]")
        return 2
    images = collect_images(args.images)
    if args.mask is not None and len(images) != 1:
        console.print("[red]--mask needs exactly one image[/]")
        return 2
    detector = None
    if args.model is not None:
        from anomalens.models import load_detector

        detector = load_detector(args.model)
    taxonomy = load_taxonomy(args.taxonomy, args.save, detector=detector)
    rows = api.classify(taxonomy, images, args.mask, detector)
    table = Table("image", "region", "type", "confidence")
    for row in rows:
        confidence = "" if row.type_confidence is None else f"{row.type_confidence:.2f}"
        table.add_row(
            Path(row.image).name,
            str(row.region if row.region is not None else "-"),
            row.defect_type or "(normal)",
            confidence,
        )
    console.print(table)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {"taxonomy": str(args.taxonomy), "types": taxonomy.types, "results": [row.to_dict() for row in rows]},
                indent=2,
            )
        )
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``classify`` sub-command on ``subparsers`` (from ``add_subparsers``); returns its parser."""
    p = subparsers.add_parser(
        "classify",
        help="name defect regions by your own defect types, learned from a few labelled examples",
        description="Classify the defect region(s) of images into the types of TAXONOMY_DIR: a saved taxonomy or "
        "a folder per type with example images (and masks: MVTec layout test/<type> + "
        "ground_truth/<type>/<stem>_mask.png, or <stem>_mask.png next to the image).",
    )
    p.add_argument("taxonomy", metavar="TAXONOMY_DIR", help="saved taxonomy or folder of labelled examples")
    p.add_argument("images", metavar="IMAGE_OR_FOLDER", nargs="+", help="images or folders to classify")
    p.add_argument("--mask", help="mask of the region to classify (one image only; default: the whole image)")
    p.add_argument("--model", metavar="MODEL_DIR", help="saved detector whose regions are classified")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    p.add_argument("--save", metavar="DIR", help="also save the taxonomy learned from TAXONOMY_DIR here")
    p.set_defaults(func=cmd_classify)
    return p
