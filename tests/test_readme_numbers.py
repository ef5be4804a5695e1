"""The README's headline numbers are the committed results files' numbers: each check below formats a value read from
`nbs/results/` the way the README writes it and asks that the README says exactly that. A re-measured file without an
updated README (or the reverse) fails here, naming the file."""
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from ris_nb.experiments import main_table_rows

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "nbs" / "results"
README = (ROOT / "README.md").read_text()


def rows(name: str) -> list[dict]:
    with open(RESULTS / name, newline="") as f: return list(csv.DictReader(f))


def flat(text: str) -> str:
    "The README with line breaks and repeated spaces folded, so a number may sit across a wrapped line."
    return re.sub(r"\s+", " ", text)


def mean_std(values) -> str:
    v = np.array([float(x) for x in values])
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}"


def by_seed(rs: list[dict], **match) -> list[dict]:
    return sorted((r for r in rs if all(r[k] == v for k, v in match.items())), key=lambda r: int(r["seed"]))


def quickstart_row() -> dict:
    return next(r for r in rows("learning_log/09_quickstart_current.csv") if "make quickstart" in r["magnet_tiny, quickstart"])


def expected_snippets() -> list[tuple[str, str]]:
    "(text the README must contain, the results file it comes from)."
    out = []
    q = quickstart_row()
    out.append((f"val oIoU {q['val oIoU']} / mIoU {q['mIoU']} / P@0.5 {q['P@0.5']}", "learning_log/09_quickstart_current.csv"))
    out.append(("| oIoU | " + " | ".join(q[t] for t in ("attribute", "location", "relation", "ordinal", "negation"))
                + f" | **{q['val oIoU']}** |", "learning_log/09_quickstart_current.csv"))
    curve = [r["val_oIoU"] for r in rows("curves_13a.csv") if r["change"] == "defaults (make quickstart)"]
    out.append((f"Val oIoU after 600 / 1,200 / 1,800 steps: {' / '.join(curve)}", "curves_13a.csv"))
    long_run = rows("learning_log/18_long_run_105600.csv")[0]
    out.append((f"reaches {long_run['val oIoU after 1,100 / 2,200 / 3,300 steps'].split(' / ')[-1]}", "learning_log/18_long_run_105600.csv"))
    seeds = rows("mg_seeds_13a.csv")
    lavt, mg = by_seed(seeds, preset="lavt_tiny"), by_seed(seeds, preset="lavt_mg_tiny")
    out.append((f"lavt_tiny {mean_std(r['oIoU'] for r in lavt)} val oIoU, lavt_mg_tiny {mean_std(r['oIoU'] for r in mg)}",
                "mg_seeds_13a.csv"))
    gaps = [float(a["oIoU"]) - float(b["oIoU"]) for a, b in zip(lavt, mg)]
    out.append((f"(by {gaps[0]:.1f}, {gaps[1]:.1f} and {gaps[2]:.1f} points)", "mg_seeds_13a.csv"))
    rich = rows("mg_rich_13a.csv")
    rl, r1, r01 = by_seed(rich, preset="lavt_tiny"), by_seed(rich, preset="lavt_mg_tiny", mg_weight="1.0", mg_changes=""), \
        by_seed(rich, preset="lavt_mg_tiny", mg_weight="0.1")
    out.append((f"{mean_std(r['oIoU'] for r in rl)} against {mean_std(r['oIoU'] for r in r1)}", "mg_rich_13a.csv"))
    out.append((f"({np.mean([float(r['rare_mIoU']) for r in rl]):.1f} against {np.mean([float(r['rare_mIoU']) for r in r1]):.1f} mIoU)",
                "mg_rich_13a.csv"))
    paired = ", ".join(f"{float(b['oIoU']) - float(a['oIoU']):+.1f}".replace("-", "−") for a, b in zip(rl, r01))
    out.append((f"{mean_std(r['oIoU'] for r in r01)}, paired {paired}", "mg_rich_13a.csv"))
    stop = by_seed(rich, preset="lavt_mg_tiny", mg_weight="1.0", mg_changes="mg.vision_grad=False")
    gain = ", ".join(f"{float(a['oIoU']) - float(b['oIoU']):+.1f}" for a, b in zip(stop, r1))
    out.append((f"{mean_std(r['oIoU'] for r in stop)}, paired {gain} against λ_MG 1", "mg_rich_13a.csv"))
    lang = {r["row"]: r for r in rows("sag_languages.csv")}
    app = [lang[f"appearance, sag_tiny, seed {s}"] for s in range(3)]
    out.append((f"reaches **val mIoU {' / '.join(r['val_mIoU'] for r in app)}** (seeds 0 / 1 / 2) against {app[0]['random_shape_mIoU']} "
                "for one random shape", "sag_languages.csv"))
    out.append((f"its best single entity reaches {app[0]['best_entity_mIoU']} mIoU and A^fuse picks it for {app[0]['picks_best_entity']} %",
                "sag_languages.csv"))
    plain = lang["plain, sag_tiny, seed 0"]
    out.append((f"the same preset reaches {plain['val_mIoU']} against {plain['random_shape_mIoU']}", "sag_languages.csv"))
    oracle = rows("sag_oracle_gather.csv")
    picks = lambda loss: sorted(float(r["picks"]) for r in oracle if r["loss"] == loss)
    c3, told = picks("c3"), picks("told")
    out.append((f"only {c3[0]:.1f}–{c3[-1]:.1f} % of the val sentences in every variant we tried, against "
                f"{float(oracle[0]['random_shape']):.1f} % for one random shape, {float(oracle[0]['words_only']):.1f} % for an answer",
                "sag_oracle_gather.csv"))
    out.append((f"and {told[0]:.1f}–{told[-1]:.1f} % when the gather is told the answer", "sag_oracle_gather.csv"))
    sag_app = json.loads((RESULTS / "study_sag_appearance.json").read_text())
    for c in sag_app["claims"]:
        floor = " (both below the language-blind floor)" if c["below_floor"] else ""
        out.append((f"| {c['claim']}, appearance language (`{c['base']}` → `{c['variant']}`) | {c['metric']} | {c['diff']:+.1f} | "
                    f"{c['spread']:.1f} | {c['verdict']}{floor} |", "study_sag_appearance.json"))
    main = json.loads((RESULTS / "main_table.json").read_text())
    for r in main_table_rows(main):                                  # the README's main table, line by line, as the record prints it
        out.append(("| " + " | ".join(r) + " |", "main_table.json"))
    out.append((f"{len(main['runs'])} runs, {main['train_s'] / 60:.0f} min of training summed over them",
                "main_table.json"))
    study = json.loads((RESULTS / "study_magnet_rich.json").read_text())
    for c in study["claims"]:
        floor = " (both below the language-blind floor)" if c["below_floor"] else ""
        out.append((f"| {c['claim']}, rich language (`{c['base']}` → `{c['variant']}`) | {c['metric']} | {c['diff']:+.1f} | "
                    f"{c['spread']:.1f} | {c['verdict']}{floor} |", "study_magnet_rich.json"))
    return out


@pytest.mark.parametrize("snippet,source", expected_snippets(), ids=lambda x: x[:40])
def test_readme_says_what_the_results_file_holds(snippet, source):
    assert flat(snippet) in flat(README), f"README.md should say {snippet!r} (from nbs/results/{source})"

