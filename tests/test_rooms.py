"""Each module holds one concern (issue 49's "rooms"), read from the exported source with `ast`: `core` imports no
model; no module below `viz` trains; diagnostics live with evaluation; entity pretraining and the official converters
have their own module; the appendix's foundations (`io`, `validate`) import no other `ris_nb` module; each idea is
written once (one atomic write, one safe unpickler, one IoU, one Dice, one tokenizer saver, one log reader); no
single-use private base class."""

import ast
import json
import re
from collections import Counter
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "ris_nb"
MODULES = {
    p.relative_to(PKG).with_suffix("").as_posix().replace("/", "."): p
    for p in PKG.rglob("*.py")
    if p.name != "_modidx.py"
}
# below `viz` in the package's layering: they build, load and score models, and never train one
BELOW_VIZ = [
    m
    for m in MODULES
    if m.split(".")[0]
    in ("io", "validate", "testing", "core", "metrics", "exercise_checks", "data", "models", "evaluate", "official")
]


def tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text())


def defined(name: str) -> list[str]:
    "The module of each function or class called `name` at any depth (a module that defines it twice is listed twice)."
    return sorted(
        m
        for m in MODULES
        for n in ast.walk(tree(m))
        if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name
    )


def type_checking_only(t: ast.Module) -> set[int]:
    "ids of the nodes under `if TYPE_CHECKING:` (imports for annotations, never run)."
    blocks = [n for n in ast.walk(t) if isinstance(n, ast.If) and ast.unparse(n.test).endswith("TYPE_CHECKING")]
    return {id(m) for b in blocks for s in b.body for m in ast.walk(s)}


def imports(module: str) -> list[str]:
    """Dotted names `module` imports at run time, relative imports resolved (function bodies included; not
    TYPE_CHECKING)."""
    out, parts, t = [], ["ris_nb", *module.split(".")[:-1]], tree(module)
    skip = type_checking_only(t)
    for n in (n for n in ast.walk(t) if id(n) not in skip):
        if isinstance(n, ast.Import):
            out += [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            base = parts[: len(parts) - n.level + 1] if n.level else []
            out.append(".".join(base + ([n.module] if n.module else [])))
    return out


def test_the_checks_see_the_package():
    assert {"core", "train", "pretrain", "evaluate", "viz", "official", "models.sag", "models.slots"} <= set(MODULES)
    assert "ris_nb.models.image_entities" in imports("pretrain") and "ris_nb.core" in imports("models.image_entities")


def test_core_imports_no_model():
    assert not [i for i in imports("core") if i.startswith("ris_nb.models")], imports("core")


@pytest.mark.parametrize("module", ["io", "validate"])
def test_the_foundations_import_no_other_ris_nb_module(module):
    "`ris_nb.io` and `ris_nb.validate` sit at the bottom of the package: `core`, `data` and the engine import them."
    assert not [i for i in imports(module) if i.startswith("ris_nb")], imports(module)


def test_models_never_import_official():
    "The Swin key map lives in `models.encoder_builds`, so no model module imports `ris_nb.official`."
    assert not [m for m in MODULES if m.startswith("models") and "ris_nb.official" in imports(m)]


def training_calls(module: str) -> list[str]:
    """Calls in `module` that train: `.backward()`, an optimizer's `.step()` on `torch.optim`, a `Learner` or a
    `TrainingRun`."""
    found = []
    for n in ast.walk(tree(module)):
        if not isinstance(n, ast.Call):
            continue
        f = n.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if name in ("backward", "Learner", "TrainingRun", "fit") or (
            isinstance(f, ast.Attribute) and "optim" in ast.unparse(f.value)
        ):
            found.append(f"line {n.lineno}: {ast.unparse(f)}")
    return found


@pytest.mark.parametrize("module", BELOW_VIZ)
def test_nothing_below_viz_trains(module):
    assert not training_calls(module), f"ris_nb.{module} trains: {training_calls(module)}"


def test_the_training_check_catches_a_loop(tmp_path):
    MODULES["_probe"] = tmp_path / "probe.py"
    MODULES["_probe"].write_text(
        "def f(m, opt, x):\n    m(x).sum().backward()\n    opt.step()\n    torch.optim.AdamW(m.parameters())\n"
    )
    try:
        assert len(training_calls("_probe")) == 2
    finally:
        del MODULES["_probe"]


@pytest.mark.parametrize(
    "name, home",
    [
        ("shatter_gather", "grounding"),  # SaG's diagnostic, beside the report's line (appendix 95c)
        ("sentence_sensitivity", "evaluate"),  # diagnostics: with evaluation
        # entity pretraining: its own module, on the Learner
        ("pretrain_entities", "pretrain"),
        ("EntityPretrainCB", "pretrain"),
        ("convert_magnet", "official"),
        ("sag_key_map", "official"),  # converters with their key maps
        # Swin's renaming with the encoders' weight loading (appendix 92b)
        ("swin_to_timm", "models.encoder_builds"),
        ("load_swin", "models.encoder_builds"),
        # the foundations
        ("write_atomic", "io"),
        ("safe_load_pickle", "io"),
        ("SafeUnpickler", "io"),
        ("torch_load_checked", "io"),
        ("check_value", "validate"),
        ("validate_config", "registry"),
        ("check_layout", "data.layout"),
        ("check_index", "data.checks"),
        ("read_refs", "data.shaperefs_files"),
        ("_write_folder", "data.shaperefs_files"),
        ("read_refer", "data.refer_files"),  # REFER files read and checked (91b)
        ("probe_ms", "machine"),
        ("official_fixture", "testing"),
        ("build_model", "registry"),
        ("mask_iou", "metrics"),
        ("dice_loss", "models.tiny_refer"),
        ("save_tokenizer", "data.transforms"),
        ("read_log", "run_folder"),
        ("ensure_shaperefs", "data.shaperefs_files"),
        ("eval_mode", "core"),
    ],
)
def test_each_idea_lives_in_one_module(name, home):
    assert defined(name) == [home], f"{name}: defined in {defined(name)}, expected once, in ris_nb.{home}"


def test_no_single_use_private_base_class():
    bases = Counter()
    for m in MODULES:
        for n in ast.walk(tree(m)):
            if isinstance(n, ast.ClassDef):
                bases.update(b.id for b in n.bases if isinstance(b, ast.Name) and b.id.startswith("_"))
    assert not bases, f"private base classes (split a class with fastcore's @patch instead): {dict(bases)}"


def test_one_restricted_unpickler():
    """Every pickle the package reads from outside (REFER's refs, ShapeRefs' refs) goes through one unpickler,
    `ris_nb.io`'s."""
    subs = [
        f"{m}.{n.name}"
        for m in MODULES
        for n in ast.walk(tree(m))
        if isinstance(n, ast.ClassDef) and any(ast.unparse(b).endswith("Unpickler") for b in n.bases)
    ]
    assert subs == ["io.SafeUnpickler"], subs


def module_of(name: str) -> str | None:
    "The module of MODULES that an imported dotted name lands in (a package's `__init__` for the package)."
    if name != "ris_nb" and not name.startswith("ris_nb."):
        return None
    parts = name.split(".")[1:]
    while parts:
        for candidate in (".".join(parts) + ".__init__", ".".join(parts)):
            if candidate in MODULES:
                return candidate
        parts = parts[:-1]
    return "__init__" if "__init__" in MODULES else None


def import_graph() -> dict[str, set[str]]:
    "Module → the ris_nb modules it imports at run time, at module level or inside a function."
    return {m: {t for i in imports(m) if (t := module_of(i)) and t != m} for m in MODULES}


def a_cycle(graph: dict[str, set[str]]) -> list[str]:
    "One import circle of `graph` (its modules in order, the first repeated at the end), or [] when there is none."
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        path.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return path[path.index(t) :] + [t]
            if t not in state and (found := visit(t)):
                return found
        state[m] = 2
        path.pop()
        return []

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return []


def test_the_cycle_finder_finds_one():
    assert a_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert a_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_circle():
    """No module imports, even inside a function, one that imports it back: every arrow of the package's drawing points
    down. A module that needs a later one's work takes it as an argument or the later module registers it."""
    cycle = a_cycle(import_graph())
    assert not cycle, "import circle: " + " → ".join(cycle)


def has_reason(lines: list[str], first: int, last: int) -> bool:
    """Whether the import on lines `first`..`last` (1-based) says why: a comment on its lines, or on the comment line
    or commented import that heads its block of imports."""
    if any("#" in lines[k - 1] for k in range(first, last + 1)):
        return True
    k = first - 1
    while k >= 1 and re.match(r"\s*(from \S+ )?import |\s*#", lines[k - 1]):
        if "#" in lines[k - 1]:
            return True
        k -= 1
    return False


def function_level_imports(module: str) -> list[str]:
    "`line N: source` of each import inside a function body of `module` that does not say why it is there."
    lines, found = MODULES[module].read_text().splitlines(), {}
    for f in ast.walk(tree(module)):
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for n in ast.walk(f):
                if isinstance(n, (ast.Import, ast.ImportFrom)) and not has_reason(lines, n.lineno, n.end_lineno):
                    found[n.lineno] = lines[n.lineno - 1]
    return [f"line {k}: {line.strip()}" for k, line in sorted(found.items())]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_function_level_import_says_why(module):
    """An import inside a function hides an arrow of the drawing or a dependency: it carries its reason as a comment
    (torch-free start-up, an optional dependency, a slow import, …), on its line or heading its block, or it moves to
    the top of the module."""
    bare = function_level_imports(module)
    assert not bare, f"ris_nb.{module}: function-level imports without a reason (`# why` on the line): {bare}"


def test_the_reason_check_finds_a_bare_import(tmp_path):
    MODULES["_probe"] = tmp_path / "probe.py"
    MODULES["_probe"].write_text(
        "import ris_nb\n\n\ndef f():\n    from ris_nb.core import Config\n    from . import io  # why\n"
        "    import ris_nb.models  # the block's reason above\n\n    import json\n    return Config, io\n\n\n"
        "def g():\n    # why, for the block\n    import numpy\n    import scipy\n\n    import csv\n"
    )
    try:
        assert function_level_imports("_probe") == [
            "line 5: from ris_nb.core import Config",
            "line 9: import json",
            "line 18: import csv",
        ]
    finally:
        del MODULES["_probe"]


def bare_models_imports(text: str) -> list[str]:
    "Lines of `text` that import the `ris_nb.models` package itself (`import ris_nb.models`, for its effect)."
    return [line.strip() for line in text.splitlines() if re.match(r"\s*import ris_nb\.models\s*($|#|,)", line)]


def test_no_module_imports_the_models_for_their_effect():
    """The registry imports a model's module when its name is first looked up (`MODEL_MODULES` in `ris_nb.registry`):
    no library module, tool, benchmark or notebook code cell imports `ris_nb.models` to register the models."""
    root = PKG.parent
    files = {p: p.read_text() for d in ("ris_nb", "tools", "bench") for p in (root / d).rglob("*.py")}
    for nb in (root / "nbs").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        files[nb] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    found = {str(p.relative_to(root)): hits for p, text in files.items() if (hits := bare_models_imports(text))}
    assert not found, found
    assert bare_models_imports("x = 1\n    import ris_nb.models  # registers\nimport ris_nb.models.sag\n") == [
        "import ris_nb.models  # registers"
    ]


CHECKPOINT_NAMES = (
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "checkpoint_paths",
    "rng_state",
    "set_rng_state",
    "generator_states",
    "set_generator_states",
    "model_state",
    "step_checkpoint",
    "best_checkpoint",
    "resume",
)


def calls(module: str, name: str) -> bool:
    "Whether `module` calls `name` (a bare name or an attribute, e.g. `torch.save`)."
    return any(
        isinstance(n, ast.Call)
        and ast.unparse(n.func).split(".")[-1] == name.split(".")[-1]
        and ast.unparse(n.func).endswith(name)
        for n in ast.walk(tree(module))
    )


def test_checkpoints_live_in_one_module():
    """What a checkpoint holds, writing it, reading it back, restoring it and the random states it keeps are defined
    in `ris_nb.checkpoints` alone; only it calls `torch.save` to write one (the sandbox's messages between the grader
    and a student's process are its other use: a wire format, never a file), and every module that saves, reads or
    restores one imports it (the import graph has one checkpoint room)."""
    assert {n: defined(n) for n in CHECKPOINT_NAMES} == {n: ["checkpoints"] for n in CHECKPOINT_NAMES}
    assert sorted(m for m in MODULES if calls(m, "torch.save")) == ["checkpoints", "sandbox"]
    users = {m for m in MODULES for n in CHECKPOINT_NAMES if m != "checkpoints" and calls(m, n)}
    assert {"train", "run_folder", "pretrain"} <= users, users
    assert not [m for m in users if "ris_nb.checkpoints" not in imports(m)], users


FINGERPRINT_NAMES = ("image_fingerprint", "run_fingerprints", "fingerprint_diff", "check_fingerprints")


def test_fingerprints_live_in_one_module():
    """The data fingerprints a checkpoint keeps, and the refusals when they differ, are defined in
    `ris_nb.fingerprints` (the vocabulary's own, `tokenizer_fingerprint`, is taught with the tokenizers in 04)."""
    names = (*FINGERPRINT_NAMES, "check_data_unchanged", "FINGERPRINTS")
    assert {n: defined(n) for n in FINGERPRINT_NAMES + ("check_data_unchanged",)} == {
        n: ["fingerprints"] for n in FINGERPRINT_NAMES + ("check_data_unchanged",)
    }
    assert "FINGERPRINTS = " in MODULES["fingerprints"].read_text() and names
    assert not [m for m in MODULES if m != "fingerprints" and "FINGERPRINTS = " in MODULES[m].read_text()]


# the engine under `fit` and the run folder: its messages name config keys; `cli_checks.in_flags` turns them into flags
ENGINE = ["core", "io", "run_folder", "checkpoints", "fingerprints", "distributed", "train", "loaders", "evaluate"]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


def message_strings(module: str) -> list[str]:
    "The string pieces of every `raise` and `warnings.warn` in `module` (f-strings' literal parts included)."
    out = []
    for node in ast.walk(tree(module)):
        call = node.exc if isinstance(node, ast.Raise) else node if isinstance(node, ast.Call) else None
        if call is None or (isinstance(node, ast.Call) and "warn" not in ast.unparse(node.func)):
            continue
        out += [c.value for c in ast.walk(call) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    return out


def cli_flags() -> set[str]:
    "Every `--flag` of every `ris_nb` command."
    import argparse

    from ris_nb.cli import build_parser

    parsers, flags = [build_parser()], set()
    while parsers:
        for a in parsers.pop()._actions:
            flags |= {o for o in a.option_strings if o.startswith("--") and o != "--help"}
            if isinstance(a, argparse._SubParsersAction):
                parsers += list(a.choices.values())
    return flags


@pytest.mark.parametrize("module", ENGINE)
def test_engine_messages_name_config_keys_not_flags(module):
    ours = cli_flags()
    assert {"--out", "--set", "--threads"} <= ours
    flags = [s for s in message_strings(module) if set(FLAG.findall(s)) & ours]
    assert not flags, f"ris_nb.{module} names a command-line flag in a message (name the config key): {flags}"


def test_the_cli_translates_keys_to_its_flags_in_one_place():
    from argparse import Namespace

    from ris_nb.cli_checks import in_flags

    msg = "run folder x holds another run; give another train.out_dir"
    train = Namespace(command="train", overrides=["train.lr=1e-3"])
    assert in_flags(msg, train) == "run folder x holds another run; give another --out"
    set_out = Namespace(command="train", overrides=["train.out_dir=runs/a"])  # the user named it by its key
    assert in_flags(msg, set_out) == msg and in_flags(msg, Namespace(command="eval")) == msg
    assert FLAG.search("give another --out") and not FLAG.search("train.out_dir, 2--3")


def test_no_module_imports_a_private_name_of_another():
    "A module's private names stay in it: no `from ris_nb.X import _name` between library modules (issue 89)."
    found = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("ris_nb")):
                found += [f"{path.name}:{node.lineno} {a.name}" for a in node.names if a.name.startswith("_")]
    assert not found, f"private names imported across modules (make them public, or move them): {found}"
