"""Few-shot defect-type classification on MagneticTile: 5 labelled examples per type, the rest classified.

For each of the five defect types (blowhole, break, crack, fray, uneven) ``--shots`` images of
``test/<type>`` (seeded random choice) with their ground-truth masks form the taxonomy; every other defective
test image is classified from its ground-truth region (all of its mask). With ``--detector`` the regions the
PatchCore detector itself finds (fitted on train/good) are classified too: the strongest region of each image
that the detector calls anomalous (``--model DIR`` takes a fitted model of any kind instead). Prints closed-set
accuracy (the type that wins; "unknown" rejection is reported separately as a rate) pooled and per type, and the
confusion matrix, for the logistic model (default), prototype and k-NN, for each of ``--seeds`` (a different choice of
labelled examples) and their mean: with 5 examples per type the choice moves the figures by several points.

    .venv/bin/python bench/defect_types_magnetic_tile.py [--data ../shared/data] [--detector [--model DIR]]
        [--seeds 0 1 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from anomalens.data import mvtec_samples, read_image, read_mask
from anomalens.data.splits import select_half
from anomalens.explanation.taxonomy import UNKNOWN, Taxonomy, region_masks
from anomalens.postprocessing.findings import extract_findings

TYPES = ("blowhole", "break", "crack", "fray", "uneven")


def evaluate(taxonomy: Taxonomy, vectors: list[np.ndarray], truth: list[str]) -> dict:
    predicted, rejected, confidences = [], 0, []
    for v in vectors:
        name, confidence, _ = taxonomy.closed_set(v)
        predicted.append(name)
        rejected += taxonomy.classify_embedding(v)[0] == UNKNOWN
        confidences.append(confidence)
    confusion = {t: {p: 0 for p in TYPES} for t in TYPES}
    for t, p in zip(truth, predicted):
        confusion[t][p] += 1
    per_type = {t: round(confusion[t][t] / max(1, sum(confusion[t].values())), 4) for t in TYPES}
    correct = sum(t == p for t, p in zip(truth, predicted))
    return {
        "accuracy": round(correct / max(1, len(truth)), 4),
        "balanced_accuracy": round(float(np.mean(list(per_type.values()))), 4),
        "per_type": per_type,
        "unknown_rate": round(rejected / max(1, len(truth)), 4),
        "mean_confidence": round(float(np.mean(confidences)) if confidences else 0.0, 4),
        "n": len(truth),
        "confusion": confusion,
    }


def show(title: str, result: dict) -> None:
    print(
        f"\n== {title}: accuracy {result['accuracy']:.3f} (balanced {result['balanced_accuracy']:.3f}, "
        f"n={result['n']}, unknown rate {result['unknown_rate']:.3f}, "
        f"mean confidence {result['mean_confidence']:.3f})"
    )
    print("per type: " + ", ".join(f"{t} {a:.3f}" for t, a in result["per_type"].items()))
    print("confusion (rows truth, columns predicted):")
    print(f"{'':>10}" + "".join(f"{p:>10}" for p in TYPES))
    for t in TYPES:
        print(f"{t:>10}" + "".join(f"{result['confusion'][t][p]:>10}" for p in TYPES))


def split(samples: list, shots: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices of ``shots`` labelled examples per type (seeded) and of the rest."""
    rng = random.Random(seed)
    support, query = [], []
    for t in TYPES:
        group = sorted((i for i, s in enumerate(samples) if s.defect_type == t), key=lambda i: samples[i].path.name)
        chosen = set(rng.sample(range(len(group)), shots))
        support += [i for k, i in enumerate(group) if k in chosen]
        query += [i for k, i in enumerate(group) if k not in chosen]
    return support, query


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data", help="MVTec-layout root holding magnetic_tile")
    parser.add_argument("--category", default="magnetic_tile")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2, 3, 4],
        help="one split of labelled examples per seed; figures per seed and their mean",
    )
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--detector", action="store_true", help="also classify the detector's own regions")
    parser.add_argument("--model", help="with --detector: a fitted model directory (default: fit PatchCore now)")
    parser.add_argument("--json", help="write the results as JSON here")
    parser.add_argument(
        "--half", choices=("validation", "report"), help="only this half of the test set (both by default)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    print("command:", " ".join(sys.argv))

    samples = mvtec_samples(args.data, args.category, "test")
    if args.half:
        samples = select_half(samples, args.half)
    samples = [s for s in samples if s.defect_type in TYPES]
    base = Taxonomy(k=args.k)
    images = [read_image(s.path) for s in samples]
    truth = [s.defect_type for s in samples]
    # every image's embeddings once; the seeds only choose which of them are the labelled examples
    gt_vectors = [
        base.embed(image, read_mask(s.mask_path, image.shape[:2]) if s.mask_path else None)
        for s, image in zip(samples, images)
    ]
    print(
        f"{args.category}: {len(samples)} defective images, ground-truth region embeddings in "
        f"{time.perf_counter() - start:.1f} s"
    )
    det_vectors: list[np.ndarray | None] = []
    if args.detector:
        from anomalens import api

        if args.model:
            from anomalens.models import load_detector

            detector = load_detector(args.model)
            print(f"{detector.name} loaded from {args.model}")
        else:
            tic = time.perf_counter()
            detector, _ = api.fit(args.data, args.category, "patchcore")
            print(f"PatchCore fitted in {time.perf_counter() - tic:.1f} s")
        for image in images:
            # the strongest region: the one the verdict and the explanation lead with
            prediction = detector.predict(image)
            findings = extract_findings(prediction, image)
            if not findings.regions:
                det_vectors.append(None)
                continue
            masks = dict(region_masks(prediction, findings))
            det_vectors.append(base.embed(image, masks[findings.regions[0].index]))

    report: dict = {"category": args.category, "shots": args.shots, "seeds": args.seeds, "k": args.k, "runs": {}}
    for seed in args.seeds:
        support, query = split(samples, args.shots, seed)
        run: dict = {"support": [str(samples[i].path) for i in support]}
        print(
            f"\n##### seed {seed}: {len(support)} labelled examples ({args.shots} per type), "
            f"{len(query)} images classified"
        )
        taxonomy = Taxonomy(k=args.k).fit_embeddings(
            np.stack([gt_vectors[i] for i in support]), [truth[i] for i in support]
        )
        methods = {
            "logistic (default)": taxonomy,
            "prototype": taxonomy.with_method("prototype"),
            f"knn (k={args.k})": taxonomy.with_method("knn"),
            "knn (k=3)": taxonomy.with_method("knn", k=3),
        }
        for name, tx in methods.items():
            run[f"ground-truth region, {name}"] = result = evaluate(
                tx, [gt_vectors[i] for i in query], [truth[i] for i in query]
            )
            show(f"ground-truth region, {name}", result)
        if args.detector:
            found = [i for i in query if det_vectors[i] is not None]
            run["detector_missed"] = len(query) - len(found)
            print(
                f"detector regions: {len(found)} of {len(query)} images called anomalous "
                f"({len(query) - len(found)} missed)"
            )
            # the same kind of region on both sides: examples described by the detector's regions too
            examples = [i for i in support if det_vectors[i] is not None]
            from_detector = Taxonomy(k=args.k).fit_embeddings(
                np.stack([det_vectors[i] for i in examples]), [truth[i] for i in examples]
            )
            both = Taxonomy(k=args.k).fit_embeddings(
                np.stack([gt_vectors[i] for i in support] + [det_vectors[i] for i in examples]),
                [truth[i] for i in support] + [truth[i] for i in examples],
            )
            for name, tx in {
                "taxonomy from ground-truth regions, logistic": taxonomy,
                "taxonomy from both views, logistic (predict --taxonomy)": both,
                "taxonomy from the detector's regions, logistic (default)": from_detector,
                "taxonomy from the detector's regions, prototype": from_detector.with_method("prototype"),
                "taxonomy from the detector's regions, knn": from_detector.with_method("knn"),
            }.items():
                key = f"detector region, {name}"
                run[key] = result = evaluate(tx, [det_vectors[i] for i in found], [truth[i] for i in found])
                show(key, result)
        report["runs"][str(seed)] = run

    print("\n| setting | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean | per type (mean) |")
    print("|---|" + "---|" * (len(args.seeds) + 2))
    report["mean"] = {}
    for key in report["runs"][str(args.seeds[0])]:
        if not isinstance(report["runs"][str(args.seeds[0])][key], dict):
            continue
        accuracies = [report["runs"][str(s)][key]["accuracy"] for s in args.seeds]
        per_type = {
            t: round(float(np.mean([report["runs"][str(s)][key]["per_type"][t] for s in args.seeds])), 3) for t in TYPES
        }
        report["mean"][key] = {"accuracy": round(float(np.mean(accuracies)), 4), "per_type": per_type}
        print(
            f"| {key} | "
            + " | ".join(f"{a:.3f}" for a in accuracies)
            + f" | {np.mean(accuracies):.3f} | "
            + ", ".join(f"{t} {v:.2f}" for t, v in per_type.items())
            + " |"
        )
    report["seconds"] = round(time.perf_counter() - start, 1)
    print(f"\ntotal {report['seconds']} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
