"""The numbers of README.md and bench/README.md are the committed results files' numbers: each check below formats a
value read from `nbs/results/` the way the page writes it and asks that the page says exactly that. A re-measured file
without an updated page (or the reverse) fails here, naming the file."""

import csv
import json
import re
from pathlib import Path

import pytest

from ris_nb.study_report import main_table_rows

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "nbs" / "results"
README = (ROOT / "README.md").read_text()
BENCH_README = (ROOT / "bench" / "README.md").read_text()


def rows(name: str) -> list[dict]:
    with open(RESULTS / name, newline="") as f:
        return list(csv.DictReader(f))


def flat(text: str) -> str:
    "The README with line breaks and repeated spaces folded, so a number may sit across a wrapped line."
    return re.sub(r"\s+", " ", text)


def quickstart_row() -> dict:
    return next(
        r for r in rows("learning_log/09_quickstart_current.csv") if "make quickstart" in r["magnet_tiny, quickstart"]
    )


def quickstart_range() -> str:
    "The range of val oIoU over every recorded `make quickstart` (a trained score moves with the CPU's vector path)."
    scores = [
        float(r["result"].removeprefix("val oIoU "))
        for r in rows("command_times.csv")
        if r["command"] == "make quickstart"
    ]
    assert all(r["cpu"] for r in rows("command_times.csv")), (
        "command_times.csv: every row names its CPU (or unrecorded)"
    )
    return f"{min(scores):.1f}–{max(scores):.1f}"


def log_match(pattern: str) -> tuple[str, ...]:
    "Groups of `pattern` in `nbs/results/learning_log.md` (the quickstart's test splits and the language-blind floors)."
    m = re.search(pattern, flat((RESULTS / "learning_log.md").read_text()))
    assert m, f"nbs/results/learning_log.md no longer matches {pattern!r}"
    return m.groups()


def probes(r: dict) -> str:
    return f"{r['probe_1t_ms']} ms / " + (f"{r['probe_2t_ms']} ms" if r["probe_2t_ms"] else "—")


def times_snippets() -> list[tuple[str, str]]:
    "(text bench/README.md must contain, source): every measured command time, and sag_tiny's."
    out = [
        (
            f"| `{r['command']}` ({r['commit']}) | {r['wall']} | {r['threads']} | {probes(r)} | {r['result']} "
            f"| {r['cpu']} |",
            "command_times.csv",
        )
        for r in rows("command_times.csv")
    ]
    sag = next(r for r in rows("sag_languages.csv") if r["row"] == "appearance, sag_tiny, seed 0")
    out.append(
        (
            f"took {float(sag['train_eval_s']):.0f} s for training and evaluation on two threads (probe "
            f"{sag['probe_1t_ms'].split('/')[0]} ms on one thread, {sag['probe_2t_ms'].split('/')[0]} ms on two;",
            "sag_languages.csv",
        )
    )
    return out


def main_table_snippets(main: dict) -> list[str]:
    "The main table's rows and the numbers its reading quotes, computed from the record."
    out = ["| " + " | ".join(r) + " |" for r in main_table_rows(main)]  # the README's main table, line by line
    out.append(f"{len(main['runs'])} runs, {main['train_s'] / 60:.0f} min of training summed over them")
    # the last call's probe, and each earlier call's (rows added later with --rows)
    for call in [*main.get("earlier_calls", []), main]:
        out.append(f"512³ probe {call['probe_ms']:.2f} ms on one thread, {call['probe_2t_ms']:.2f} ms on two")

    def score(n, lang, split="val"):
        return main["rows"][n]["scores"][lang][split][main["rows"][n]["metric"]]

    def blind(n, lang, split):
        return max(
            main["floors"][lang][split][f][main["rows"][n]["metric"]]
            for f in ("random shape", "all shapes", "largest shape")
        )

    def margin(n, lang, split):
        return score(n, lang, split)[0] - blind(n, lang, split)

    app = min(margin(n, "appearance", s) for n in main["rows"] for s in main["splits"])
    out.append(f"On appearance every row is more than {int(app)} points above the best answer")
    papers = [n for n in main["rows"] if n not in ("sag", "tiny_refer")]
    sup = [margin(n, l, s) for n in papers for l in ("plain", "rich") for s in main["splits"]]
    out.append(f"papers' supervised rows are {min(sup):.1f}–{max(sup):.1f} points above it")
    assert all(margin("sag", l, "testB") < 0 for l in ("plain", "rich")), (
        "the README says SaG drops under the floor on testB"
    )

    def gap(a, b, lang):
        return (score(b, lang)[0] - score(a, lang)[0], max(score(a, lang)[1], score(b, lang)[1]))

    (d_app, s_app), (d_rich, s_rich) = gap("lavt", "magnet", "appearance"), gap("lavt", "magnet", "rich")
    out.append(f"(+{d_app:.1f} val oIoU, spread {s_app:.1f}) and barely on rich (+{d_rich:.1f}, spread {s_rich:.1f})")
    out.append(
        f"costs {-gap('lavt', 'lavt_mg', 'plain')[0]:.1f} and {-gap('lavt', 'lavt_mg', 'rich')[0]:.1f} val "
        "oIoU on plain and rich"
    )
    # TinyRefer (02a): best supervised row on appearance; what LAVT's and MagNet's machinery buys on plain and rich
    supervised = [n for n in main["rows"] if n != "sag"]
    assert max(supervised, key=lambda n: score(n, "appearance")[0]) == "tiny_refer"
    out.append(
        f"best supervised row on appearance ({score('tiny_refer', 'appearance')[0]:.1f} val oIoU, MagNet "
        f"{score('magnet', 'appearance')[0]:.1f})"
    )
    buys = [score(n, l)[0] - score("tiny_refer", l)[0] for n in ("lavt", "magnet") for l in ("plain", "rich")]
    out.append(f"+{min(buys):.1f} to +{max(buys):.1f} val oIoU")
    return out


def best_floor(row: dict) -> tuple[str, str]:
    "(value, name) of the best language-blind answer of a `sag_languages.csv` row, as the README quotes it."
    floors = {name: row[f"{name.replace(' ', '_')}_mIoU"] for name in ("random shape", "all shapes", "largest shape")}
    name = max(floors, key=lambda k: float(floors[k]))
    return floors[name], name


def expected_snippets() -> list[tuple[str, str]]:
    "(text the README must contain, the results file it comes from)."
    out = []
    q = quickstart_row()
    out.append(
        (f"val oIoU {q['val oIoU']} / mIoU {q['mIoU']} / P@0.5 {q['P@0.5']}", "learning_log/09_quickstart_current.csv")
    )
    val, _, test_a, test_b = log_match(r"\*\*([\d.]+) val oIoU\*\* \(mIoU ([\d.]+), testA ([\d.]+), testB ([\d.]+)\)")
    assert val == q["val oIoU"], "learning_log.md and learning_log/09_quickstart_current.csv disagree on the quickstart"
    all_shapes = log_match(r"all shapes ([\d.]+) / [\d.]+")[0]
    out.append((f"(testA {test_a}, testB {test_b}) against {all_shapes} oIoU for the best answer", "learning_log.md"))
    for r in rows("command_times.csv")[:2]:  # the quickstart, on two machines
        out.append(
            (f"| **{r['wall']}** | {r['threads']} | {probes(r)} | {r['result']} | {r['cpu']} |", "command_times.csv")
        )
    out.append((f"Quickstarts reach {quickstart_range()} val oIoU, by CPU", "command_times.csv"))
    lang = {r["row"]: r for r in rows("sag_languages.csv")}
    app = [lang[f"appearance, sag_tiny, seed {s}"] for s in range(3)]
    floor, name = best_floor(app[0])
    out.append(
        (
            f"reaches **val mIoU {' / '.join(r['val_mIoU'] for r in app)}** (seeds 0 / 1 / 2) against {floor} "
            f"for the best answer that ignores the sentence ({name})",
            "sag_languages.csv",
        )
    )
    plain = lang["plain, sag_tiny, seed 0"]
    out.append((f"the same preset reaches {plain['val_mIoU']} against {best_floor(plain)[0]}", "sag_languages.csv"))
    main = json.loads((RESULTS / "main_table.json").read_text())
    out += [(s, "main_table.json") for s in main_table_snippets(main)]
    out.append((mg_quickstart_snippet(rows("mg_quickstart_appearance.csv")), "mg_quickstart_appearance.csv"))
    for lang in ("appearance", "plain"):
        runs = rows(f"mg_quickstart_{lang}.csv")
        for base, variant in (("lavt", "lavt_mg"), ("magnet_no_mg", "magnet")):
            out.append((mg_verdict_snippet(runs, base, variant), f"mg_quickstart_{lang}.csv"))
    out.append((sag_claims_snippet(), "study_sag_appearance.json, study_sag_entities*.json"))
    return out


def sag_claims_snippet() -> str:
    """SaG's claims on appearance by verdict: the fusion and inference study, the entity study, the latter's claims
    rerun at 5 seeds replacing their 3-seed verdicts (as 95g_sag_studies shows them)."""
    fusion, ent, ent5 = (
        json.loads((RESULTS / f"{n}.json").read_text())
        for n in ("study_sag_appearance", "study_sag_entities", "study_sag_entities_5seeds")
    )
    again = {c["claim"]: c for c in ent5["claims"]}
    verdicts = [c["verdict"] for c in fusion["claims"]] + [again.get(c["claim"], c)["verdict"] for c in ent["claims"]]
    n = {k: sum(v.startswith(k) for v in verdicts) for k in ("reproduced", "inconclusive", "not reproduced")}
    assert sum(n.values()) == len(verdicts), verdicts
    return (
        f"of SaG's {len(verdicts)} ablation claims on appearance, {n['reproduced']} are reproduced in direction, "
        f"{n['inconclusive']} inconclusive and {n['not reproduced']} not reproduced"
    )


def seed_scores(runs: list[dict], row: str) -> dict[int, float]:
    "Val oIoU of `row`'s runs in a quickstart-budget record, by seed."
    return {int(r["seed"]): float(r["val_oIoU"]) for r in runs if r["row"] == row}


def mg_quickstart_snippet(runs: list[dict]) -> str:
    "MG against LAVT at the quickstart's budget on appearance: below LAVT in every seed."
    lavt, mg = seed_scores(runs, "lavt"), seed_scores(runs, "lavt_mg")
    seeds = sorted(set(lavt) & set(mg))
    diffs = [mg[s] - lavt[s] for s in seeds]
    assert all(d < 0 for d in diffs), f"MG is not below LAVT in every seed: {diffs}"
    assert len(seeds) == len(lavt) == len(mg), "the README's claim is about every seed of both rows"
    return "not reproduced at this scale, below LAVT in every seed"


def mg_verdict_snippet(runs: list[dict], base: str, variant: str) -> str:
    "A quickstart-budget MG claim on one language as the README words it: difference, seeds, spread and verdict."
    from ris_nb.experiments import verdict

    b, v = (list(seed_scores(runs, row).values()) for row in (base, variant))
    vd = verdict(b, v)
    lang = runs[0]["language"]
    return f"{vd['diff']:+.1f} on {lang} ({len(b)} seeds, spread {vd['spread']:.1f}: {vd['verdict']}".replace("-", "−")


@pytest.mark.parametrize("snippet,source", expected_snippets(), ids=lambda x: x[:40])
def test_readme_says_what_the_results_file_holds(snippet, source):
    assert flat(snippet) in flat(README), f"README.md should say {snippet!r} (from nbs/results/{source})"


@pytest.mark.parametrize("snippet,source", times_snippets(), ids=lambda x: x[:40])
def test_bench_readme_says_what_the_results_file_holds(snippet, source):
    assert flat(snippet) in flat(BENCH_README), f"bench/README.md should say {snippet!r} (from nbs/results/{source})"


def test_nbdev_never_rewrites_the_readme():
    """README.md is kept by hand: settings.ini's readme_nb must name no notebook, or nbdev_prepare would render one
    over it."""
    from nbdev.config import get_config

    # the check nbdev_prepare and nbdev_docs run before rendering README.md
    from nbdev.quarto import _doc_mtime_not_older

    cfg = get_config(path=ROOT)
    assert not (cfg.nbs_path / cfg.readme_nb).exists(), (
        f"settings.ini: readme_nb = {cfg.readme_nb} exists, so nbdev_prepare / nbdev_docs would overwrite README.md"
    )
    assert _doc_mtime_not_older(ROOT / "README.md", cfg.nbs_path / cfg.readme_nb), (
        "this nbdev would render README.md anyway"
    )


def test_readme_is_a_front_page():
    "The README stays a front page (≤ 150 lines); benchmarks live in bench/README.md, the learning log in 13a."
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 150, f"README.md has {n} lines; move details to bench/README.md or the notebooks"


# Every number the README's study paragraphs quote has a row: the main table's section (its reading and the Mask
# Grounding study at the quickstart's budget) quotes scores, differences of two rows' means and seed spreads; each must
# be one of the regime it names, in `nbs/results/regimes.csv` (the one table of regimes, 13a) or `main_table.json`.


def main_table_section() -> str:
    "The README's '## The main table in miniature' section without its table, line breaks folded."
    m = re.search(r"^## The main table in miniature\n(.*?)^## ", README, re.M | re.S)
    assert m, "README.md has no '## The main table in miniature' section"
    return flat("\n".join(line for line in m.group(1).splitlines() if not line.startswith("|")))


def quoted_numbers() -> list[tuple[str, str, str]]:
    """(kind, number, sentence) for every decimal number of a sentence of that section that quotes a score (names
    oIoU or mIoU) or a verdict (a seed spread). kind: "spread" after "spread", "difference" when signed or after
    "costs", else "score"; the sign is dropped ("costs 5.0" and "−5.0" are one difference)."""
    out = []
    for s in re.split(r"(?<=\.)\s+(?=[A-Z`])", main_table_section()):
        if not re.search(r"[om]IoU|spread", s):
            continue
        for m in re.finditer(r"(?<![\d.])\d+\.\d+", s):
            before = s[: m.start()]
            if before.endswith("spread "):
                kind = "spread"
            elif before.endswith(("+", "−", "-")) or re.search(r"costs [\d.]+ and $|costs $", before):
                kind = "difference"
            else:
                kind = "score"
            out.append((kind, m.group(), s))
    return out


def numbers_of(groups: list[list[tuple[float, float, list[float]]]]) -> dict[str, set[str]]:
    """Per kind, the numbers of `groups` (each a regime's rows as (mean, std, per-seed scores)) formatted as the README
    writes them: means and per-seed scores; stds; differences of two means of one group (unrounded)."""
    out = {"score": set(), "spread": set(), "difference": set()}
    for rows_ in groups:
        out["score"] |= {f"{v:.1f}" for mean, _, seeds in rows_ for v in (mean, *seeds)}
        out["spread"] |= {f"{std:.1f}" for _, std, _ in rows_ if std == std}
        out["difference"] |= {f"{abs(a[0] - b[0]):.1f}" for a in rows_ for b in rows_ if a is not b}
    return out


def regime_groups(sentence: str) -> list:
    """The rows of `regimes.csv` at the quickstart's budget (57,600 samples) on the data seed the sentence names, one
    group per data set and metric."""
    import statistics

    seed = re.search(r"data seed (\d+)", sentence)
    assert seed, f"a quickstart-budget sentence names its data seed: {sentence!r}"
    groups = {}
    for r in rows("regimes.csv"):
        if r["samples"] != "57600" or f"data seed {seed.group(1)}" not in r["regime"]:
            continue
        seeds = [float(x) for x in r["per_seed"].split()]
        if seeds:
            mean, std = statistics.fmean(seeds), statistics.stdev(seeds) if len(seeds) > 1 else float("nan")
        else:
            mean, std = float(r["mean"]), float(r["std"])
        groups.setdefault((r["data"], r["metric"]), []).append((mean, std, seeds))
    return list(groups.values())


def main_table_groups(sentence: str) -> list:
    "The main table's rows, one group per language, split (val only where the sentence says val) and metric."
    main = json.loads((RESULTS / "main_table.json").read_text())
    groups = {}
    for row in main["rows"].values():
        for lang, splits in row["scores"].items():
            for split, metrics in splits.items():
                if split == "val" or " val " not in sentence:
                    for metric, (mean, std) in metrics.items():
                        groups.setdefault((lang, split, metric), []).append((mean, std, []))
    return list(groups.values())


QUOTED = quoted_numbers()


def test_readme_study_paragraphs_quote_numbers():
    "The extraction reads the main table's reading and the quickstart-budget MG sentence (or it would check nothing)."
    assert len(QUOTED) >= 12, QUOTED
    assert {k for k, _, _ in QUOTED} == {"score", "spread", "difference"}, QUOTED
    assert any("quickstart's budget" in s for _, _, s in QUOTED), "no quickstart-budget MG sentence found"


@pytest.mark.parametrize("kind,number,sentence", QUOTED, ids=lambda x: x[:30])
def test_every_readme_score_has_a_regime_row(kind, number, sentence):
    """A score, spread or difference the README quotes is one of the rows of the regime its sentence names:
    `regimes.csv`'s rows at the quickstart's budget on that data seed, else `main_table.json`'s."""
    quickstart = "quickstart" in sentence
    found = numbers_of(regime_groups(sentence) if quickstart else main_table_groups(sentence))[kind]
    where = "nbs/results/regimes.csv (quickstart budget)" if quickstart else "nbs/results/main_table.json"
    assert number in found, f"README.md quotes the {kind} {number} with no row for it in {where}: {sentence!r}"
