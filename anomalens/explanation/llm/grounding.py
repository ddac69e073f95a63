"""Does an LLM's answer contradict the measured findings?

:func:`check` compares the structured reply with the findings: the verdict, the number of regions, the grid
positions (only cells some region covers may be named), a description or defect type that denies the defect of
an anomalous image (or claims one on a normal image), counts and grid words inside the description.
:func:`check_text` applies the text-level part to any sentence (used on chat replies and final texts).
Each contradiction is one plain sentence, ready to be sent back to the model.
"""

from __future__ import annotations

import re

from anomalens.explanation.llm.schema import GRID_WORDS, LLMExplanation
from anomalens.explanation.offline import ASKS_SEVERITY, ASKS_SIZE
from anomalens.postprocessing.findings import SEVERITY_ORDER
from anomalens.results.record import InspectionRecord

_DENIALS = re.compile(
    r"\b(no|not any|without|zero)\s+(visible\s+|apparent\s+|obvious\s+)?"
    r"(defects?|anomal(y|ies)|damage|flaws?|faults?|issues?|problems?)\b"
    r"|\b(is|are|looks?|appears?)\s+not\s+(anomalous|defective|damaged)\b|\bnon[- ]?defective\b"
    r"|\b(defect|anomaly|flaw)[- ]free\b|\blooks?\s+(normal|fine|good|ok)\b|\bis\s+normal\b"
    r"|\bnothing\s+(wrong|unusual|abnormal)\b|\bno\s+action\b|^\s*(none|normal|n/?a|no)\s*\.?\s*$",
    re.IGNORECASE,
)
_AFFIRMS = re.compile(
    r"\b(is|looks|appears)\s+(anomalous|defective|damaged)\b|\b(defects?|anomal(y|ies))\s+(found|detected|present)\b"
    r"|\b(there\s+(is|are))\s+(an?\s+|\d+\s+|some\s+)?(defects?|anomal(y|ies)|scratch(es)?|cracks?)\b",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(r"<[^<>]{2,}>")  # "<at most 10 words>" copied from the prompt
_NONE_TYPES = {"", "none", "no defect", "no anomaly", "normal", "n/a", "na", "null", "nothing", "-", "not applicable"}
_NUMBERS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "single": 1,
    "a single": 1,
}
_COUNTED = re.compile(
    r"\b(a single|single|one|two|three|four|five|six|seven|eight|nine|ten|\d+)\s+(\w+\s+)?"
    r"(regions?|defects?|anomal(y|ies)|spots?|areas?|scratch(es)?|cracks?|stains?|marks?|blobs?)\b",
    re.IGNORECASE,
)
_EDGES = {"top", "bottom", "left", "right"}  # "on the left" is fine for a region at the bottom left
_GRID = re.compile(
    r"\b(" + "|".join(sorted((re.escape(w) for w in GRID_WORDS), key=len, reverse=True)) + r"|centre|middle)\b",
    re.IGNORECASE,
)


def allowed_positions(f: InspectionRecord) -> list[str]:
    """Grid words covered by some region, in the regions' order (strongest first)."""
    return list(dict.fromkeys(word for region in f.regions for word in (region.position, *region.grid) if word))


def check_text(text: str, f: InspectionRecord) -> list[str]:
    """Contradictions between a free text and the findings: denial or claim of a defect against the verdict,
    a stated number of regions other than the count, grid words where no region is."""
    problems: list[str] = []
    anomalous = f.anomalous
    count = len(f.regions)
    if anomalous and _DENIALS.search(text or ""):
        problems.append(
            f"the text {text!r} denies a defect, but the image is anomalous with {count} "
            f"region{'s' if count != 1 else ''}"
        )
    if not anomalous and _AFFIRMS.search(text or ""):
        problems.append(f"the text {text!r} claims a defect, but the image is normal")
    # a normal image has no regions: any stated number of them, or any place of one, contradicts it too
    for match in _COUNTED.finditer(text or ""):
        number = match.group(1).lower()
        value = int(number) if number.isdigit() else _NUMBERS.get(number)
        if value is not None and value != count:
            problems.append(
                f"the text says {match.group(0)!r}, but there {'is 1 region' if count == 1 else f'are {count} regions'}"
            )
    allowed = set(allowed_positions(f))
    for match in _GRID.finditer(text or ""):
        word = {"centre": "center", "middle": "center"}.get(match.group(1).lower(), match.group(1).lower())
        edge_ok = word in _EDGES and any(word in a.split() for a in allowed)
        if word not in allowed and not edge_ok:
            problems.append(
                f"the text names the {word}, but no region is there (regions at: "
                f"{', '.join(allowed_positions(f)) or 'none, the image is normal'})"
            )
    return problems


_ASKS_COUNT = re.compile(r"\bhow many\b", re.IGNORECASE)
_ASKS_WHERE = re.compile(r"\bwhere\b|\blocat", re.IGNORECASE)
_ASKS_WHETHER = re.compile(r"^\s*(is|are)\s+there\b.*\b(anomal|defect)", re.IGNORECASE)
_DENIES_ITSELF = re.compile(r"\b(is|are)\s+not\s+(an?\s+)?(anomal(y|ies)|defects?)\b", re.IGNORECASE)


_ASKS_SIZE = re.compile(ASKS_SIZE, re.IGNORECASE)
_ASKS_SEVERITY = re.compile(ASKS_SEVERITY, re.IGNORECASE)
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*(?:%|percent\b)", re.IGNORECASE)
_SEVERITIES = SEVERITY_ORDER[1:]  # the bands a region can have ("none" is an image without regions)


def _area_problems(text: str, f: InspectionRecord) -> list[str]:
    """Asked how large: the answer must give a measured area (a region's or all regions' share of the image,
    in %, within a quarter of it or half a point) and no other percentage."""
    measured = [100 * r.area_fraction for r in f.regions if r.area_fraction is not None]
    if not measured:
        return []
    measured.append(100 * f.total_area_fraction)
    said = [float(m.group(1)) for m in _PERCENT.finditer(text or "")]
    wrong = [v for v in said if not any(abs(v - m) <= max(0.5, 0.25 * m) for m in measured)]
    facts = ", ".join(dict.fromkeys(f"{m:.1f}%" for m in measured))
    if wrong:
        return [
            f"the answer states {', '.join(f'{v:g}%' for v in wrong)}, but the measured areas are {facts} of the image"
        ]
    if not said:
        return [f"asked how large, the answer does not give the measured area ({facts} of the image)"]
    return []


def _severity_problems(text: str, f: InspectionRecord) -> list[str]:
    """Asked how severe: the answer must name a measured severity band (others may appear beside it, as when the
    bands are explained)."""
    measured = {r.severity for r in f.regions}
    if not measured:
        return []
    said = {w for w in _SEVERITIES if re.search(rf"\b{w}\b", (text or "").lower())}
    if said and not said & measured:
        return [
            f"the answer calls it {', '.join(sorted(said))}, but the measured severity is {', '.join(sorted(measured))}"
        ]
    if not said:
        return [f"asked how severe, the answer does not give the measured severity ({', '.join(sorted(measured))})"]
    return []


def check_answer(question: str, text: str, f: InspectionRecord) -> list[str]:
    """For the standard questions (is there an anomaly, where, how many, how large, how severe) the answer must
    state the measured fact, not merely avoid contradicting it; plus everything ``check_text`` finds."""
    problems = check_text(text, f)
    anomalous = f.anomalous
    count = len(f.regions)
    lowered = (text or "").lower()
    if anomalous and _DENIES_ITSELF.search(lowered):
        problems.append(f"the answer {text!r} says the anomaly is not an anomaly")
    if _ASKS_WHETHER.search(question) and not re.search(r"\byes\b" if anomalous else r"\bno\b", lowered):
        problems.append(f"asked whether there is an anomaly, the answer does not say {'yes' if anomalous else 'no'}")
    if _ASKS_COUNT.search(question):
        words = {str(count)} | {w for w, n in _NUMBERS.items() if n == count} | ({"no", "none"} if not count else set())
        if not any(re.search(rf"\b{re.escape(w)}\b", lowered) for w in words):
            problems.append(f"asked how many, the answer does not give the count ({count})")
    if _ASKS_SIZE.search(question) and anomalous:
        problems += _area_problems(text, f)
    if _ASKS_SEVERITY.search(question) and anomalous:
        problems += _severity_problems(text, f)
    if _ASKS_WHERE.search(question) and anomalous:
        if not any(position in lowered for position in allowed_positions(f)):
            problems.append(
                f"asked where, the answer names none of the regions' positions ({', '.join(allowed_positions(f))})"
            )
    return problems


def check(reply: LLMExplanation, f: InspectionRecord) -> list[str]:
    """Every way ``reply`` contradicts the record's findings (empty when it is consistent)."""
    problems: list[str] = []
    anomalous = f.anomalous
    count = len(f.regions)
    verdict = "anomalous" if anomalous else "normal"
    if reply.anomalous != anomalous:
        problems.append(f'"anomalous" is {str(reply.anomalous).lower()}, but the detector\'s verdict is {verdict}')
    if reply.count != count:
        problems.append(f'"count" is {reply.count}, but the findings have {count} region{"s" if count != 1 else ""}')
    allowed = allowed_positions(f)
    if anomalous:
        wrong = [p for p in reply.positions if p not in allowed]
        if wrong:
            problems.append(
                f'"positions" has {", ".join(repr(p) for p in wrong)}, but the regions are only at: '
                f"{', '.join(allowed)}"
            )
        if not reply.positions:
            problems.append(f'"positions" is empty, but the regions are at: {", ".join(allowed)}')
        if reply.defect_type.strip().lower() in _NONE_TYPES - {""}:
            problems.append(f'"defect_type" is {reply.defect_type!r}, but the image is anomalous')
    else:
        if reply.positions:
            problems.append(f'"positions" is {reply.positions}, but the image is normal (no regions): use []')
        if reply.defect_type.strip().lower() not in _NONE_TYPES:
            problems.append(f'"defect_type" is {reply.defect_type!r}, but the image is normal: use "none"')
    fields = {
        "description": reply.description,
        "defect_type": reply.defect_type,
        "recommended_action": reply.recommended_action,
        **{f"likely_causes[{i}]": c for i, c in enumerate(reply.likely_causes)},
    }
    for name, value in fields.items():
        if _PLACEHOLDER.search(value or ""):
            problems.append(f'"{name}" is the template\'s placeholder {value!r}: write the real content')
    for problem in check_text(reply.description, f):
        problems.append('"description": ' + problem)
    return problems
