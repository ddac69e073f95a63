"""Prompt templates and the messages built from them.

The templates (``system.txt``, ``explain.txt``, ``chat_system.txt``) ship in
``anomalens/explanation/prompts/`` and are read with :mod:`importlib.resources`. A directory given as
``prompts_dir`` (or in ``ANOMALENS_PROMPTS_DIR``) overrides them file by file: a template missing there comes
from the package. Templates use ``string.Template`` placeholders (``$findings``...), so JSON braces need no
escaping.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from anomalens.results.record import InspectionRecord

PROMPTS_ENV = "ANOMALENS_PROMPTS_DIR"
TEMPLATES = ("system.txt", "explain.txt", "chat_system.txt")


def load_template(name: str, prompts_dir: str | os.PathLike | None = None) -> str:
    """The template ``name``: from ``prompts_dir``, else ``$ANOMALENS_PROMPTS_DIR``, else the package."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown prompt template {name!r}; known: {', '.join(TEMPLATES)}")
    for folder in (prompts_dir, os.environ.get(PROMPTS_ENV)):
        if folder:
            path = Path(folder) / name
            if path.is_file():
                return path.read_text(encoding="utf-8")
    return resources.files("anomalens.explanation").joinpath("prompts", name).read_text(encoding="utf-8")


def render(name: str, prompts_dir: str | os.PathLike | None = None, **values: Any) -> str:
    """Template ``name`` with ``$placeholders`` filled (unknown ones are left as they are)."""
    return Template(load_template(name, prompts_dir)).safe_substitute(values).strip()


def _percent(fraction: float | None) -> str:
    if fraction is None:
        return "?%"
    percent = 100 * fraction
    return f"{percent:.1f}%" if percent >= 0.1 else "<0.1%"


def findings_text(f: InspectionRecord) -> str:
    """Compact facts: verdict, count, and per region its grid positions, area, severity, look and (when a
    taxonomy named it) its type."""
    regions = f.regions
    score = f.normalized_score
    score_text = f"{score:.2f}x the threshold" if score is not None else "above any threshold"
    if not f.anomalous:
        return f"verdict: normal (score {score_text})\nregions: 0"
    lines = [
        f"verdict: anomalous (score {score_text}, severity {f.severity})",
        f"regions: {len(regions)} (total area {_percent(f.total_area_fraction)} of the image)",
    ]
    for i, r in enumerate(regions, 1):
        where = r.position
        others = [p for p in r.grid if p != where]
        if others:
            where += f" (extending to {', '.join(others)})"
        looks = [r.brightness] if r.brightness in ("darker", "brighter") else []
        if r.brightness == "similar":
            looks.append("similar brightness")
        if "other colour" in r.appearance:
            looks.append("other colour")
        if r.shape:
            looks.append(r.shape)
        kind = ""
        if r.defect_type:  # named by the user's taxonomy, from labelled examples
            confidence = r.type_confidence
            kind = f"; type by the user's examples: {r.defect_type}" + (
                f" (confidence {confidence:.2f})" if confidence is not None else ""
            )
        lines.append(
            f"region {i}: {where}; area {_percent(r.area_fraction)}; severity {r.severity}"
            + (f"; {', '.join(looks)}" if looks else "")
            + kind
        )
    return "\n".join(lines)


def _positions(f: InspectionRecord) -> list[str]:
    return list(dict.fromkeys(r.position for r in f.regions))


def history_text(seen_before: list[str] | None) -> str:
    """Similar past cases from the defect history, quoted for the model to draw causes and actions from."""
    if not seen_before:
        return ""
    listed = "\n".join(f"- {case}" for case in seen_before)
    return (
        "\nSimilar defects seen before at this line (from the operators' defect history); use their causes "
        f"and actions where they fit:\n{listed}\n"
    )


def explain_messages(
    f: InspectionRecord,
    images: list[str] | None = None,
    prompts_dir: str | os.PathLike | None = None,
    seen_before: list[str] | None = None,
) -> list[dict[str, Any]]:
    """System + user message asking for the JSON explanation; ``images`` (data URLs) are attached as
    image parts (first the image|mask composite, then the normal reference when given); ``seen_before``
    (``Case.seen_before()`` sentences of similar past cases) is quoted as history."""
    images = images or []
    note = ""
    if images:
        note = (
            "\nImage 1 shows the inspected image (left) and the detected anomaly mask over it (right)."
            + ("\nImage 2 is a normal reference image of the same product." if len(images) > 1 else "")
            + "\n"
        )
    text = render(
        "explain.txt",
        prompts_dir,
        findings=findings_text(f),
        images=note,
        history=history_text(seen_before),
        anomalous=json.dumps(f.anomalous),
        count=len(f.regions),
        positions_example=json.dumps(_positions(f)),
    )
    content: Any = text
    if images:
        content = [{"type": "text", "text": text}] + [
            {"type": "image_url", "image_url": {"url": url}} for url in images
        ]
    return [{"role": "system", "content": render("system.txt", prompts_dir)}, {"role": "user", "content": content}]


def retry_message(problems: list[str]) -> dict[str, str]:
    """The follow-up that lists what contradicted the findings and asks again."""
    listed = "\n".join(f"- {p}" for p in problems)
    return {
        "role": "user",
        "content": "Your answer contradicts the measured findings or the required format:\n"
        f"{listed}\nAnswer again with one corrected JSON object only.",
    }


def chat_system_message(
    findings: InspectionRecord, prompts_dir: str | os.PathLike | None = None, seen_before: list[str] | None = None
) -> dict[str, str]:
    return {
        "role": "system",
        "content": render(
            "chat_system.txt", prompts_dir, findings=findings_text(findings), history=history_text(seen_before)
        ),
    }
