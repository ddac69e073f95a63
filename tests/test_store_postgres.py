"""The inspection store on a real PostgreSQL server, started for this test in a temporary folder.

Skipped, with the reason, where no PostgreSQL server binaries are installed (Debian: ``postgresql``) or the
server does not start. As root the server runs as the ``postgres`` (or ``nobody``) user, as PostgreSQL demands.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("psycopg")
from sqlalchemy import create_engine, inspect, text  # noqa: E402

from anomalens.explanation.llm.local_server import free_port  # noqa: E402
from anomalens.results.record import ExplanationRecord  # noqa: E402
from anomalens.service.store import KeyReused, ResultFilter, Store  # noqa: E402
from conftest import build_record  # noqa: E402

RECORD = build_record(
    "part1.png",
    score=3.5,
    normalized_score=1.4,
    text="Yes, there is an anomaly.",
    regions=[
        {
            "grid": ["top left"],
            "position": "top left",
            "bbox": [1, 2, 30, 40],
            "area_fraction": 0.01,
            "severity": "high",
            "defect_type": "crack",
            "type_confidence": 0.9,
        }
    ],
)
PNGS = {"image": b"\x89PNG-image", "overlay": b"\x89PNG-overlay", "mask": b"\x89PNG-mask"}


def _server_bin() -> Path | None:
    on_path = shutil.which("pg_ctl")
    candidates = ([str(Path(on_path).resolve().parent)] if on_path else []) + sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), reverse=True
    )
    for folder in candidates:
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _as_server_user() -> tuple[list[str], str | None]:
    """Command prefix and owner for running the server: PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return [], None
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["runuser", "-u", user, "--"], user
    pytest.skip("running as root and no 'postgres' or 'nobody' user to run the PostgreSQL server as")


@pytest.fixture(scope="module")
def postgres_url():
    folder = _server_bin()
    if folder is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's 'postgresql' package")
    prefix, user = _as_server_user()
    # directly under /tmp: pytest's own tmp folders are private to root, which the server user cannot enter
    base = Path(tempfile.mkdtemp(prefix="anomalens-postgres-"))
    data, log = base / "data", base / "server.log"
    if user is not None:
        shutil.chown(base, user)
        base.chmod(0o700)
    port = free_port()
    run = lambda *args: subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)  # noqa: E731
    created = run(str(folder / "initdb"), "-D", str(data), "-U", "anomalens", "--auth=trust", "-E", "UTF8")
    if created.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"initdb failed: {created.stderr.strip()[-300:]}")
    started = run(
        str(folder / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(log),
        "-w",
        "-t",
        "60",
        "-o",
        f"-p {port} -c listen_addresses=127.0.0.1 -k {base}",
        "start",
    )
    if started.returncode != 0:
        reason = f"{started.stderr.strip()[-300:]} {log.read_text()[-300:] if log.exists() else ''}"
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {reason}")
    try:
        admin = create_engine(f"postgresql+psycopg://anomalens@127.0.0.1:{port}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("CREATE DATABASE inspections"))
        admin.dispose()
        yield f"postgresql+psycopg://anomalens@127.0.0.1:{port}/inspections"
    finally:
        run(str(folder / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_stations_starting_together_migrate_the_new_database_once(postgres_url):
    """Two processes open the store at the same moment: one creates the schema, the other waits for it."""
    # each process imports, says "ready", and migrates when told to: so they really start together
    script = (
        "import sys; from anomalens.service.store import migrate; print('ready', flush=True); "
        "sys.stdin.readline(); migrate(sys.argv[1])"
    )
    stations = [
        subprocess.Popen(
            [sys.executable, "-c", script, postgres_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    assert [station.stdout.readline() for station in stations] == ["ready\n"] * 2
    for station in stations:
        station.stdin.write("go\n")
        station.stdin.flush()
    errors = [station.communicate(timeout=300)[1] for station in stations]
    assert [station.returncode for station in stations] == [0, 0], errors
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == ["0002"]
    engine.dispose()


def test_two_stations_share_one_postgres_store(postgres_url):
    station_a, station_b = Store(postgres_url), Store(postgres_url)
    try:
        first = station_a.add_inspection(RECORD, PNGS, model="tile", station="a")
        second = station_b.add_inspection(build_record("part2.png", anomalous=False), PNGS, model="tile", station="b")
        assert station_b.get(first).station == "a" and station_a.get(second).station == "b"
        assert station_a.count() == station_b.count() == 2
        assert station_b.image(first, "overlay") == PNGS["overlay"]
        assert [r.id for r in station_a.results(ResultFilter(anomalous=True))] == [first]
        assert [r.id for r in station_a.results(ResultFilter(defect_type="crack"))] == [first]
        assert station_a.results(ResultFilter(defect_type="crac")) == []
        station_b.add_message(first, "user", "where?")
        station_b.add_message(first, "assistant", "top left", "offline")
        assert [m["content"] for m in station_a.messages(first)] == ["where?", "top left"]
        feedback_id = station_a.add_feedback(first, "confirmed", 0, "crack", "", "", "", [7])
        assert station_b.feedback(first)[0]["id"] == feedback_id
        assert station_b.get(first).feedback_status == "confirmed"
        station_a.set_explanation(first, ExplanationRecord(text="A crack.", source="llm", reason="grounded"))
        assert station_b.get(first).explanation.source == "llm"
    finally:
        station_a.close()
        station_b.close()
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0002"
        assert connection.execute(text("SELECT count(*) FROM inspection_images")).scalar() == 6
    assert {"inspections", "inspection_images", "chat_messages", "feedback", "idempotency_keys"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()


def test_the_service_stores_in_postgres(postgres_url, tmp_path, demo_data):
    from fastapi.testclient import TestClient

    from anomalens.data import read_image
    from anomalens.models import PatchCore
    from anomalens.service import ServiceSettings, create_app

    train = sorted((demo_data / "magnetic_tile" / "train" / "good").glob("*.jpg"))[:4]
    PatchCore(image_size=64, min_bank_size=256, augment_below=4, calibration="normal").fit(
        [read_image(p) for p in train]
    ).save(tmp_path / "model")
    settings = ServiceSettings.create(tmp_path / "model", tmp_path / "data", database_url=postgres_url, api_key=None)
    image = (demo_data / "magnetic_tile" / "test" / "good" / "exp4_num_332730.jpg").read_bytes()
    with TestClient(create_app(settings)) as client:
        before = client.get("/health").json()["stored_results"]
        result = client.post("/inspect", files={"file": ("tile.jpg", image)}).json()
    with TestClient(create_app(settings)) as restarted:
        assert restarted.get(f"/results/{result['id']}").json()["image"] == "tile.jpg"
        assert restarted.get("/health").json()["stored_results"] == before + 1
    assert not (tmp_path / "data" / "inspections.db").exists()  # nothing went to SQLite


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'inspections.db'}"
    return request.getfixturevalue("postgres_url")


def test_an_idempotency_key_finds_what_each_attempt_stored_and_nothing_twice(store_url):
    """Two attempts of one request under one key, in turn and overlapping, store each file once."""
    first, second = Store(store_url), Store(store_url)
    try:
        before = first.count()
        claims = first.claims("line-9", "k-1", "digest-a", files=2)
        assert [(c.item, c.stored_id) for c in claims] == [(0, None), (1, None)]
        stored = first.add_inspection(RECORD, PNGS, model="tile", station="line-9", claim=claims[0])
        # the second attempt finds file 0 stored; it and the first attempt both store file 1: one row is kept
        retried = second.claims("line-9", "k-1", "digest-a", files=2)
        assert [c.stored_id for c in retried] == [stored, None]
        kept = first.add_inspection(RECORD, PNGS, model="tile", station="line-9", claim=claims[1])
        assert second.add_inspection(RECORD, PNGS, model="tile", station="line-9", claim=retried[1]) == kept
        assert first.count() == before + 2
        assert [c.stored_id for c in second.claims("line-9", "k-1", "digest-a", files=2)] == [stored, kept]
        with pytest.raises(KeyReused, match="'k-1' was sent before with other files"):
            second.claims("line-9", "k-1", "digest-b", files=2)
        assert second.claims("line-10", "k-1", "digest-b", files=1)[0].stored_id is None  # another station's key
    finally:
        first.close()
        second.close()
