"""The default explainer: sentences built only from measured findings, no model needed.

Nothing is said that the findings do not hold: no defect type, no cause, only the verdict, the number of
regions, where they are (3x3 grid of the image), how large, their shape, how they look next to their
surroundings, and their severity band (see :mod:`anomalens.postprocessing.findings`).

Both functions read an :class:`~anomalens.results.record.InspectionRecord`.
"""

from __future__ import annotations

import re

from anomalens.results.record import InspectionRecord, RegionRecord

ORDINALS = ("first", "second", "third")
MAX_DESCRIBED = 3
CAN_ANSWER = (
    "is there an anomaly, where is it, how many regions are there, how large are they, "
    "how severe are they, and what kind of defect it is (with a taxonomy)"
)


def _score(f: InspectionRecord) -> str:
    value = f.normalized_score
    return f"score {value:.2f} of the threshold" if value is not None else "score above any threshold"


def _percent(fraction: float | None) -> str:
    if fraction is None:
        return "an unknown part"
    percent = 100 * fraction
    return f"{percent:.1f}%" if percent >= 0.1 else "less than 0.1%"


def _place(cell: str) -> str:
    """Grid cell name as a phrase: "at the bottom left", "in the center"."""
    return "in the center" if cell == "center" else f"at the {cell}"


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def where_phrase(region: RegionRecord) -> str:
    """ "at the top left, extending to the top and top right" (main cell first, then the others by share)."""
    main = region.position
    others = [p for p in region.grid if p != main]
    phrase = _place(main)
    return f"{phrase}, extending to the {_join(others)}" if others else phrase


def _looks(region: RegionRecord) -> list[str]:
    words = []
    brightness = region.brightness
    if brightness in ("darker", "brighter"):
        words.append(f"is {brightness} than its surroundings")
    elif brightness == "similar":
        words.append("has about the same brightness as its surroundings")
    if "other colour" in region.appearance:
        words.append("differs in colour from them" if words else "differs in colour from its surroundings")
    return words


def describe_region(region: RegionRecord, label: str | None = None) -> str:
    """One sentence for one region.

    With a ``label`` ("The strongest"): "The strongest, at the bottom left, covers 3.1% of the image, is darker
    than its surroundings and is elongated (severity: high)."; without: "It is at the bottom left, covers ...".
    """
    clauses = [f"covers {_percent(region.area_fraction)} of the image", *_looks(region)]
    if region.shape:
        clauses.append(f"is {region.shape}")
    kind = _kind(region)
    if kind:
        clauses.append(kind)
    start = f"{label}, {where_phrase(region)}," if label else f"It is {where_phrase(region)},"
    return f"{start} {_join(clauses)} (severity: {region.severity})."


def _kind(region: RegionRecord) -> str:
    """The taxonomy's type of a region, as a clause ("" when no taxonomy classified it)."""
    kind = region.defect_type
    if not kind:
        return ""
    if kind == "unknown":
        return "matches none of the known defect types"
    confidence = region.type_confidence
    return f"looks most like {kind}" + (f" (type confidence {confidence:.2f})" if confidence is not None else "")


def _what_kind(f: InspectionRecord) -> str:
    regions = f.regions
    if not f.anomalous or not regions:
        return f"There is no defect to name: the image looks normal ({_score(f)})."
    named = [(i, _kind(r)) for i, r in enumerate(regions) if _kind(r)]
    if not named:
        return (
            "No defect types are configured, so I can only describe what was measured: "
            + describe_region(regions[0])
            + " Give a taxonomy (--taxonomy) to name defect types."
        )
    if len(regions) == 1:
        return f"The region {named[0][1]}."
    return " ".join(f"Region {i + 1} {kind}." for i, kind in named)


def _regions_word(count: int) -> str:
    return f"{count} region" if count == 1 else f"{count} regions"


def explain(f: InspectionRecord, seen_before: list[str] | None = None) -> str:
    """A few sentences grounded only in the record's findings and, when given, past cases from the defect
    history (``Case.seen_before()`` sentences), which are quoted, never generalised."""
    if not f.anomalous:
        return f"No, the image looks normal ({_score(f)})."
    regions = f.regions
    count = len(regions)
    head = (
        f"Yes, there is an anomaly in the image: {_regions_word(count)}, covering "
        f"{_percent(f.total_area_fraction)} of the image ({_score(f)}, severity: {f.severity})."
    )
    sentences = [head]
    if count == 1:
        sentences.append(describe_region(regions[0]))
    else:
        for i, region in enumerate(regions[:MAX_DESCRIBED]):
            label = "The strongest" if i == 0 else f"The {ORDINALS[i]}"
            sentences.append(describe_region(region, label))
        if count > MAX_DESCRIBED:
            rest = count - MAX_DESCRIBED
            sentences.append(f"{rest} more {'region is' if rest == 1 else 'regions are'} not described here.")
    for past in seen_before or []:
        sentences.append(past[0].upper() + past[1:] + ".")
    return " ".join(sentences)


def _where(f: InspectionRecord) -> str:
    regions = f.regions
    if not f.anomalous or not regions:
        return "There is no anomaly in the image, so there is nothing to locate."
    if len(regions) == 1:
        return f"The anomaly is {where_phrase(regions[0])} of the image."
    parts = [f"region {i + 1} {where_phrase(r)}" for i, r in enumerate(regions)]
    return f"There are {len(regions)} anomalous regions, strongest first: " + "; ".join(parts) + "."


def _how_many(f: InspectionRecord) -> str:
    count = len(f.regions)
    if not f.anomalous or count == 0:
        return "There are no anomalous regions: the image looks normal."
    return f"There {'is' if count == 1 else 'are'} {_regions_word(count)} with an anomaly."


def _how_large(f: InspectionRecord) -> str:
    regions = f.regions
    if not f.anomalous or not regions:
        return "There is no anomaly in the image, so it has no size."
    if len(regions) == 1:
        r = regions[0]
        return f"The anomalous region covers {_percent(r.area_fraction)} of the image ({r.area_pixels} pixels)."
    parts = [f"region {i + 1}: {_percent(r.area_fraction)} ({r.area_pixels} pixels)" for i, r in enumerate(regions)]
    return (
        f"Together the {len(regions)} regions cover {_percent(f.total_area_fraction)} of the image: "
        + "; ".join(parts)
        + "."
    )


def _how_severe(f: InspectionRecord) -> str:
    regions = f.regions
    if not f.anomalous or not regions:
        return f"Nothing: the image looks normal ({_score(f)})."
    bands = (
        "severity bands by peak score in units of the image threshold: below 1.25 low, below 1.6 "
        "medium, below 2.2 high, otherwise critical"
    )
    if len(regions) == 1:
        r = regions[0]
        peak = f"{r.relative_peak:.2f}" if r.relative_peak is not None else "above any"
        return f"The severity is {r.severity} (peak {peak} times the threshold; {bands})."
    parts = [f"region {i + 1}: {r.severity}" for i, r in enumerate(regions)]
    return f"The worst severity is {f.severity}: " + "; ".join(parts) + f" ({bands})."


def _yes_no(f: InspectionRecord) -> str:
    if not f.anomalous:
        return f"No, the image looks normal ({_score(f)})."
    count = len(f.regions)
    return f"Yes, there is an anomaly in the image: {_regions_word(count)} ({_score(f)})."


def _summary(f: InspectionRecord) -> str:
    if not f.anomalous:
        return f"The image looks normal ({_score(f)})."
    regions = f.regions
    where = f", the strongest {where_phrase(regions[0])}" if regions else ""
    return f"The image is anomalous: {_regions_word(len(regions))}{where} (severity: {f.severity})."


# what a question asks about; the grounding check of LLM answers (explanation/llm/grounding.py) reads the same
ASKS_SIZE = r"\bhow (large|big|much)\b|\bsize\b|\barea\b|\bextent\b"
ASKS_SEVERITY = r"\bsever|\bserious|\bhow bad\b"

RULES = (
    (r"\bwhere\b|\blocat|\bposition", _where),
    (r"\bhow many\b|\bnumber of\b|\bcount\b", _how_many),
    (ASKS_SIZE, _how_large),
    (ASKS_SEVERITY, _how_severe),
    (r"\bwhat (kind|type|sort)\b|\bwhich (kind|type)\b|\bdefect type\b|\bclassif", _what_kind),
    (r"anomal|defect|damage|flaw|\bfault", _yes_no),
)


def answer(question: str, f: InspectionRecord) -> str:
    """Answer one of AnomalyGPT's standard questions by keyword rules (case-insensitive).

    "Is there any anomaly in the image?" -> yes / no; "Where ...?" -> grid positions; "How many ...?" ->
    region count; "How large ...?" -> areas; "How severe ...?" -> severity. Anything else gets a one-line
    summary and the list of questions that can be answered.
    """
    text = question.lower()
    for pattern, respond in RULES:
        if re.search(pattern, text):
            return respond(f)
    return f"{_summary(f)} I can answer: {CAN_ANSWER}."
