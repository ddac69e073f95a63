"""The suite table *before* the suite protocol: an earlier commit's defaults on the same report halves.

Checks nothing out itself: give it a work tree of the earlier commit (``git worktree add /tmp/before COMMIT``).
Its ``anomalens fit`` and ``anomalens evaluate`` run with that tree first on ``PYTHONPATH``, on a copy of each
category (symbolic links, ``suite.half_folder``) whose test set is the report half only.

    .venv/bin/python bench/suite_before.py --tree /tmp/before --json bench/results/suite_before.json \
        --md bench/results/suite_before.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import SUITE, fmt, half_folder  # noqa: E402


def run(tree: str, data: str, category: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
    cli = [sys.executable, "-m", "anomalens.cli.main"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        half_folder(data, category, root)
        check = subprocess.run(
            [sys.executable, "-c", "import anomalens; print(anomalens.__file__)"],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp,
        ).stdout
        assert check.startswith(str(Path(tree).resolve())), f"the earlier tree is not the one imported: {check}"
        start = time.perf_counter()
        # run from the temporary folder: ``python -m`` puts the working directory ahead of PYTHONPATH
        subprocess.run(
            [*cli, "fit", str(root), "--category", category, "-o", f"{tmp}/model"],
            env=env,
            check=True,
            capture_output=True,
            cwd=tmp,
        )
        fit_seconds = time.perf_counter() - start
        subprocess.run(
            [*cli, "evaluate", f"{tmp}/model", str(root), "--category", category, "--json", f"{tmp}/eval.json"],
            env=env,
            check=True,
            capture_output=True,
            cwd=tmp,
        )
        report = json.loads(Path(f"{tmp}/eval.json").read_text())
    return {
        "detector": "anomalens patchcore (before)",
        "category": category,
        "fit_seconds": round(fit_seconds, 1),
        **report,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", required=True, help="work tree of the earlier commit")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--categories", nargs="+", default=list(SUITE))
    parser.add_argument("--json", default="bench/results/suite_before.json")
    parser.add_argument("--md", default="bench/results/suite_before.md")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "-C", args.tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    results = [run(args.tree, args.data, category) for category in args.categories]
    meta = {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit}
    Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    lines = [
        f"# Suite before: commit {commit}'s defaults on the report halves",
        "",
        f"`{meta['command']}` on {meta['date']}.",
        "",
        "| category | image AUROC | pixel AUROC | AUPRO@30 | accuracy | recall | false alarms | oracle acc. | fit s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['category']} | {fmt(r['image_auroc'])} | {fmt(r['pixel_auroc'])} | {fmt(r['pixel_aupro'])} | "
            f"{fmt(r['accuracy'])} | {fmt(r['recall'])} | {fmt(r['false_positive_rate'])} | "
            f"{fmt(r['oracle_accuracy'])} | {fmt(r['fit_seconds'], 0)} |"
        )
    lines += [
        "",
        "Per defect type:",
        "",
        "| category | defect | image AUROC | pixel AUROC | AUPRO@30 | recall |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for defect, m in r["per_defect_type"].items():
            lines.append(
                f"| {r['category']} | {defect} | {fmt(m['image_auroc'])} | {fmt(m['pixel_auroc'])} | "
                f"{fmt(m['pixel_aupro'])} | {fmt(m['recall'])} |"
            )
    Path(args.md).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
