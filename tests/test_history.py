"""The defect history: storage, operator feedback, retrieval of similar past cases, persistence."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from anomalens.explanation import explain
from anomalens.explanation.history import Case, DefectHistory
from conftest import build_record

RECORD = build_record(
    "line3/part17.png",
    regions=[{"position": "bottom left", "grid": ["bottom left"], "defect_type": "crack"}],
    text="Yes, there is an anomaly ...",
)


def unit(vector):
    vector = np.asarray(vector, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_similar_by_embedding_ranks_the_nearest_case_first():
    history = DefectHistory()
    history.add(Case("a.png", "confirmed", "blowhole", cause="gas in the mould", embedding=unit([1, 0, 0])))
    history.add(Case("b.png", "confirmed", "crack", cause="thermal stress", embedding=unit([0, 1, 0])))
    history.add(Case("c.png", "confirmed", "fray", embedding=unit([0, 0, 1])))
    matches = history.similar(embedding=unit([0.1, 0.9, 0.05]), k=2)
    assert [case.defect_type for case, _ in matches] == ["crack", "blowhole"]
    assert matches[0][1] > matches[1][1]
    assert matches[0][0].seen_before() == "seen before: crack, cause was thermal stress"


def test_similar_by_text_uses_descriptions_causes_and_actions():
    history = DefectHistory()
    history.add(
        Case(
            "a.png",
            "confirmed",
            "stain",
            description="oil stain near the edge",
            cause="leaking bearing",
            action="replace the bearing seal",
        )
    )
    history.add(Case("b.png", "confirmed", "hole", description="round hole", cause="needle break"))
    best, score = history.similar(text="dark oil stain on fabric", k=1)[0]
    assert best.defect_type == "stain" and score > 0


def test_feedback_confirm_correct_and_false_alarm():
    history = DefectHistory()
    confirmed = history.record_feedback(RECORD, 0, "confirmed", cause="tool wear", action="replace the cutter")
    corrected = history.record_feedback(RECORD, 0, "corrected", defect_type="break")
    history.record_feedback(RECORD, 0, "false_alarm")
    cases = {c.id: c for c in history.cases()}
    assert cases[confirmed].defect_type == "crack" and cases[confirmed].region.position == "bottom left"
    assert cases[confirmed].seen_before() == (
        "seen before: crack at the bottom left, cause was tool wear, fixed by replace the cutter"
    )
    assert cases[corrected].defect_type == "break"
    assert len(history.cases(include_false_alarms=False)) == 2
    with pytest.raises(ValueError, match="right defect type"):
        history.record_feedback(RECORD, 0, "corrected")
    with pytest.raises(ValueError, match="no region 3"):
        history.record_feedback(RECORD, 3, "confirmed")
    with pytest.raises(ValueError, match="status"):
        history.add(Case("x.png", "maybe"))  # type: ignore[arg-type]


def test_history_persists_in_sqlite_without_pickle(tmp_path):
    path = tmp_path / "history" / "defects.sqlite"
    first = DefectHistory(path)
    first.add(Case("a.png", "confirmed", "blowhole", embedding=unit([3, 4])))
    first.close()
    again = DefectHistory(path)
    (case,) = again.cases()
    assert case.defect_type == "blowhole" and np.allclose(case.embedding, [0.6, 0.8])
    raw = sqlite3.connect(path).execute("SELECT embedding FROM cases").fetchone()[0]
    assert raw == np.asarray([0.6, 0.8], dtype=np.float32).tobytes()  # raw floats, not a pickle


def test_offline_explanation_quotes_past_cases():
    findings = build_record(regions=[{"position": "top", "grid": ["top"], "area_fraction": 0.01, "severity": "high"}])
    text = explain(findings, seen_before=["seen before: crack at the top, cause was thermal stress"])
    assert text.endswith("Seen before: crack at the top, cause was thermal stress.")
    assert "Seen before" not in explain(findings)


def test_a_new_finding_is_matched_by_what_its_region_looks_like(textures):
    from anomalens.explanation.history import region_query

    def record_of(image, mask, position):
        ys, xs = np.nonzero(mask)
        return build_record(
            "x.png",
            regions=[
                {"position": position, "bbox": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]}
            ],
        )

    blob, blob_mask = textures.defect(textures.normal(96, 96, seed=1), "blob", center=(30, 30), size=12, seed=1)
    scratch, scratch_mask = textures.defect(textures.normal(96, 96, seed=2), "scratch", size=40, seed=2)
    history = DefectHistory()
    # both past cases at the same position: the words cannot tell them apart, the look can
    # the scratch first: a search that ignored the look would return it first
    for image, mask, kind, cause in (
        (scratch, scratch_mask, "scratch", "a burr on the conveyor"),
        (blob, blob_mask, "blowhole", "gas in the mould"),
    ):
        record = record_of(image, mask, "center")
        history.record_feedback(
            record, 0, "corrected", kind, cause=cause, embedding=region_query(record, 0, image, mask)[0]
        )
    new_blob, new_mask = textures.defect(textures.normal(96, 96, seed=3), "blob", center=(60, 50), size=11, seed=3)
    sentences = history.seen_before(record_of(new_blob, new_mask, "center"), new_blob, new_mask)
    assert "gas in the mould" in sentences[0], sentences
    assert history.seen_before(build_record(anomalous=False)) == []  # nothing found, nothing to compare


TWO_REGIONS = build_record(
    "line3/part18.png",
    regions=[
        {"position": "top left", "grid": ["top left"], "defect_type": "crack"},
        {"position": "bottom right", "grid": ["bottom right"], "defect_type": "stain"},
    ],
)


def test_a_new_judgement_of_a_stored_results_region_replaces_the_one_before():
    history = DefectHistory()
    first = [history.record_feedback(TWO_REGIONS, i, "confirmed", result_id="r1") for i in (0, 1)]
    for _ in range(7):
        assert [history.record_feedback(TWO_REGIONS, i, "confirmed", result_id="r1") for i in (0, 1)] == first
    assert [(c.id, c.result_id, c.region_index, c.status) for c in history.cases()] == [
        (first[0], "r1", 0, "confirmed"),
        (first[1], "r1", 1, "confirmed"),
    ]
    changed = history.record_feedback(TWO_REGIONS, 0, "corrected", "break", cause="thermal stress", result_id="r1")
    assert changed == first[0]
    region0, region1 = history.cases()
    assert (region0.status, region0.defect_type, region0.cause) == ("corrected", "break", "thermal stress")
    assert (region1.status, region1.defect_type, region1.cause) == ("confirmed", "stain", "")
    history.record_feedback(TWO_REGIONS, 0, "false_alarm", result_id="r1")
    assert [c.status for c in history.cases()] == ["false_alarm", "confirmed"]
    # another result's region, and judgements made without a stored result, are cases of their own
    other = history.record_feedback(TWO_REGIONS, 0, "confirmed", result_id="r2")
    loose = [history.record_feedback(TWO_REGIONS, 0, "confirmed") for _ in range(2)]
    assert len({*first, other, *loose}) == 5 and len(history.cases()) == 5


def test_a_history_file_made_before_result_ids_opens_and_replaces_from_then_on(tmp_path):
    path = tmp_path / "defects.sqlite"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE cases (id INTEGER PRIMARY KEY AUTOINCREMENT, created_at REAL NOT NULL, image TEXT NOT NULL,"
            " status TEXT NOT NULL, defect_type TEXT, description TEXT NOT NULL DEFAULT '',"
            " cause TEXT NOT NULL DEFAULT '', action TEXT NOT NULL DEFAULT '', region_json TEXT NOT NULL DEFAULT '{}',"
            " embedding BLOB)"
        )
        old.execute(
            "INSERT INTO cases (created_at, image, status, defect_type) VALUES (1.0, 'a.png', 'confirmed', 'hole')"
        )
    history = DefectHistory(path)
    [old_case] = history.cases()
    assert (old_case.image, old_case.defect_type, old_case.result_id, old_case.region_index) == (
        "a.png",
        "hole",
        None,
        None,
    )
    ids = {history.record_feedback(RECORD, 0, status, "break", result_id="r1") for status in ("confirmed", "corrected")}
    history.close()
    again = DefectHistory(path)
    assert len(ids) == 1 and [(c.status, c.result_id) for c in again.cases()] == [
        ("confirmed", None),
        ("corrected", "r1"),
    ]
