"""How often does the grounding check reject SmolLM2-135M on synthetic findings? A quality figure, not a test.

Ten findings of known shape (one region in each place, bars, two and three regions, a normal image), built from
planted rectangles in an anomaly map without any detector, so the figure depends on the model and the prompts
only. For each: the JSON explanation (``LLMExplainer.explain``: one retry with the problems listed, then the
offline fallback) and a chat of AnomalyGPT's three questions, each turn checked. Prints the share of first
answers rejected, of explanations that fell back to offline, and of chat turns rejected, with what the
rejections were about; writes them, and every result, to ``bench/results/llm_grounding.json``.
On real images: ``llm_grounding_magnetic_tile.py``.

    .venv/bin/python bench/llm_grounding.py [--json bench/results/llm_grounding.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from llm_grounding_magnetic_tile import QUESTIONS, explain_and_chat, kind_of

from anomalens import api
from anomalens.explanation.llm import LLMExplainer
from anomalens.explanation.llm.local_server import LocalLlamaServer
from anomalens.results.record import InspectionRecord
from anomalens.types import Prediction, Thresholds

SHAPE = (90, 120)
THRESHOLDS = Thresholds(image=1.0, pixel=0.5, method="synthetic")
# (name, [(rows, cols, peak score)], darker than the surface)
CASES = [
    ("one dark blob bottom left", [(slice(70, 80), slice(8, 22), 1.9)], True),
    ("one bright blob center", [(slice(40, 50), slice(55, 65), 1.3)], False),
    ("top right square", [(slice(5, 20), slice(95, 115), 2.5)], True),
    ("horizontal bar at the top", [(slice(10, 14), slice(5, 115), 1.7)], False),
    ("vertical bar on the left", [(slice(5, 85), slice(10, 13), 1.4)], True),
    ("two regions", [(slice(75, 79), slice(5, 35), 1.8), (slice(8, 16), slice(95, 103), 1.1)], True),
    (
        "three regions",
        [(slice(5, 12), slice(5, 12), 2.4), (slice(40, 48), slice(55, 63), 1.5), (slice(75, 85), slice(100, 112), 1.2)],
        False,
    ),
    ("big central patch", [(slice(25, 65), slice(35, 85), 3.0)], True),
    ("small bottom right", [(slice(78, 84), slice(108, 114), 1.1)], False),
    ("normal image", [], True),
]


def synthetic_findings(boxes: list[tuple[slice, slice, float]], dark: bool) -> InspectionRecord:
    """The record of an anomaly map with one rectangle per box (peak score inside) on a flat grey image."""
    anomaly_map = np.full(SHAPE, 0.1, np.float32)
    image = np.full((*SHAPE, 3), 0.5, np.float32)
    for rows, cols, peak in boxes:
        anomaly_map[rows, cols] = peak
        image[rows, cols] = 0.15 if dark else 0.9
    mask = anomaly_map >= THRESHOLDS.pixel
    anomalous = bool(mask.any())
    score = float(anomaly_map.max()) if anomalous else 0.7
    return api.inspection_record(
        "synthetic.png", image, Prediction(score, anomaly_map, anomalous, mask, THRESHOLDS), 0.0
    )


def share(flags: list[bool]) -> float:
    return round(float(np.mean(flags)), 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="bench/results/llm_grounding.json")
    args = parser.parse_args(argv)
    print("command:", " ".join(sys.argv), flush=True)
    records = []
    start = time.perf_counter()
    with LocalLlamaServer() as server:
        explainer = LLMExplainer(server.config(vision=False, timeout_s=120, max_retries=0, max_tokens=160))
        chatter = LLMExplainer(server.config(vision=False, timeout_s=120, max_retries=0, max_tokens=60))
        print(f"server {server.base_url} model {server.model}; {len(CASES)} findings", flush=True)
        for name, boxes, dark in CASES:
            findings = synthetic_findings(boxes, dark)
            result, figures = explain_and_chat(explainer, chatter, findings)
            records.append({"case": name, **figures})
            print(
                f"[{name}] explanation {result.source} after {result.attempts} attempt(s); chat "
                + ", ".join(turn["source"] for turn in figures["chat"]),
                flush=True,
            )
    turns = [turn for record in records for turn in record["chat"]]
    summary = {
        "model": Path(server.model).name,
        "cases": len(records),
        "first_answer_rejected": share([r["first_rejected"] for r in records]),
        "explanation_fell_back_to_offline": share([r["explain_source"] == "offline" for r in records]),
        "chat_turn_rejected": share([t["source"] == "offline" for t in turns]),
        "chat_turn_rejected_per_question": {
            q: share([t["source"] == "offline" for t in turns if t["question"] == q]) for q in QUESTIONS
        },
        "first_answer_rejections_about": dict(
            Counter(kind_of(p) for r in records for p in (r["problems"][0] if r["problems"] else [])).most_common()
        ),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary, indent=1))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"summary": summary, "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
