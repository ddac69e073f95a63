"""Few-shot defect-type classification on MagneticTile: 5 labelled examples per type, the rest classified.

For each of the five defect types (blowhole, break, crack, fray, uneven) ``--shots`` images of
``test/<type>`` (seeded random choice) with their ground-truth masks form the taxonomy; every other defective
test image is classified from its ground-truth region (all of its mask). With ``--detector`` the regions the
PatchCore detector itself finds (fitted on train/good) are classified too: the largest predicted region of each
image that the detector calls anomalous (``--model DIR`` takes a fitted model of any kind instead). Prints closed-set accuracy (nearest type; "unknown" rejection is
reported separately as a rate) pooled and per type, and the confusion matrix, for prototype and k-NN.

    .venv/bin/python bench/defect_types_magnetic_tile.py [--data ../shared/data] [--detector] [--json OUT]
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
from anomalens.explanation.taxonomy import UNKNOWN, Taxonomy, region_masks
from anomalens.postprocessing.findings import extract_findings

TYPES = ("blowhole", "break", "crack", "fray", "uneven")


def evaluate(taxonomy: Taxonomy, vectors: list[np.ndarray], truth: list[str]) -> dict:
    predicted, rejected, confidences = [], 0, []
    for v in vectors:
        label, confidence, distances = taxonomy.classify_embedding(v)
        predicted.append(min(distances, key=distances.get))
        rejected += label == UNKNOWN
        confidences.append(confidence)
    confusion = {t: {p: 0 for p in TYPES} for t in TYPES}
    for t, p in zip(truth, predicted):
        confusion[t][p] += 1
    per_type = {t: round(confusion[t][t] / max(1, sum(confusion[t].values())), 4) for t in TYPES}
    correct = sum(t == p for t, p in zip(truth, predicted))
    return {"accuracy": round(correct / max(1, len(truth)), 4),
            "balanced_accuracy": round(float(np.mean(list(per_type.values()))), 4),
            "per_type": per_type, "unknown_rate": round(rejected / max(1, len(truth)), 4),
            "mean_confidence": round(float(np.mean(confidences)) if confidences else 0.0, 4),
            "n": len(truth), "confusion": confusion}


def show(title: str, result: dict) -> None:
    print(f"\n== {title}: accuracy {result['accuracy']:.3f} (balanced {result['balanced_accuracy']:.3f}, "
          f"n={result['n']}, unknown rate {result['unknown_rate']:.3f}, "
          f"mean confidence {result['mean_confidence']:.3f})")
    print("per type: " + ", ".join(f"{t} {a:.3f}" for t, a in result["per_type"].items()))
    print("confusion (rows truth, columns predicted):")
    print(f"{'':>10}" + "".join(f"{p:>10}" for p in TYPES))
    for t in TYPES:
        print(f"{t:>10}" + "".join(f"{result['confusion'][t][p]:>10}" for p in TYPES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data", help="MVTec-layout root holding magnetic_tile")
    parser.add_argument("--category", default="magnetic_tile")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--detector", action="store_true", help="also classify the detector's own regions")
    parser.add_argument("--model", help="with --detector: a fitted model directory (default: fit PatchCore now)")
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()

    samples = [s for s in mvtec_samples(args.data, args.category, "test") if s.defect_type in TYPES]
    rng = random.Random(args.seed)
    support, query = [], []
    for t in TYPES:
        group = sorted((s for s in samples if s.defect_type == t), key=lambda s: s.path.name)
        chosen = set(rng.sample(range(len(group)), args.shots))
        support += [s for i, s in enumerate(group) if i in chosen]
        query += [s for i, s in enumerate(group) if i not in chosen]

    base = Taxonomy(method="knn", k=args.k)
    images: dict[Path, np.ndarray] = {}

    def load(s):
        image = read_image(s.path)
        images[s.path] = image
        return image, read_mask(s.mask_path, image.shape[:2]) if s.mask_path else None

    support_vectors = [base.embed(*load(s)) for s in support]
    base.fit_embeddings(np.stack(support_vectors), [s.defect_type for s in support],
                        [str(s.path) for s in support])
    query_vectors = [base.embed(*load(s)) for s in query]
    truth = [s.defect_type for s in query]
    print(f"{args.category}: {len(support)} labelled examples ({args.shots} per type, seed {args.seed}), "
          f"{len(query)} images classified; embeddings in {time.perf_counter() - start:.1f} s")

    report: dict = {"category": args.category, "shots": args.shots, "seed": args.seed, "k": args.k,
                    "support": [str(s.path) for s in support], "ground_truth_region": {}}
    methods = {"prototype": base.with_method("prototype"), f"knn (k={args.k}, default)": base,
               "knn (k=3)": base.with_method("knn", k=3)}
    for name, taxonomy in methods.items():
        result = evaluate(taxonomy, query_vectors, truth)
        report["ground_truth_region"][name] = result
        show(f"ground-truth region, {name}", result)

    if args.detector:
        from anomalens import api

        if args.model:
            from anomalens.models import load_detector

            detector = load_detector(args.model)
            print(f"\n{detector.name} loaded from {args.model}")
        else:
            tic = time.perf_counter()
            detector, _ = api.fit(args.data, args.category, "patchcore")
            print(f"\nPatchCore fitted in {time.perf_counter() - tic:.1f} s")

        def detector_vectors(group):
            """Embeddings of the largest region the detector outlines in each image (None when it finds none)."""
            out = []
            for s in group:
                image = images[s.path]
                prediction = detector.predict(image)
                findings = extract_findings(prediction, image)
                if not findings.regions:
                    out.append(None)
                    continue
                masks = dict(region_masks(prediction, findings))
                out.append(base.embed(image, masks[findings.largest.index]))
            return out

        query_found = detector_vectors(query)
        vectors = [v for v in query_found if v is not None]
        det_truth = [t for v, t in zip(query_found, truth) if v is not None]
        missed = len(query) - len(vectors)
        print(f"detector regions: {len(vectors)} of {len(query)} images called anomalous ({missed} missed)")
        report["detector_region"] = {"n_missed": missed}
        for name, taxonomy in methods.items():
            result = evaluate(taxonomy, vectors, det_truth)
            report["detector_region"][name] = result
            show(f"detector region, taxonomy from ground-truth regions, {name}", result)
        # the same kind of region on both sides: the taxonomy learned from the detector's regions of the examples
        support_found = detector_vectors(support)
        kept = [(v, s) for v, s in zip(support_found, support) if v is not None]
        from_detector = Taxonomy(method="knn", k=args.k)
        from_detector.fit_embeddings(np.stack([v for v, _ in kept]), [s.defect_type for _, s in kept],
                                     [str(s.path) for _, s in kept])
        report["detector_region_detector_taxonomy"] = {"n_examples": len(kept)}
        for name, taxonomy in {"prototype": from_detector.with_method("prototype"),
                               f"knn (k={args.k}, default)": from_detector}.items():
            result = evaluate(taxonomy, vectors, det_truth)
            report["detector_region_detector_taxonomy"][name] = result
            show(f"detector region, taxonomy from the detector's regions of the examples, {name}", result)

    report["seconds"] = round(time.perf_counter() - start, 1)
    print(f"\ntotal {report['seconds']} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
