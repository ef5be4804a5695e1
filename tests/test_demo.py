"""The demo (`ris_nb.demo`, 17_demo), driven in-process as a browser would drive it: set a widget's `.value`, click its
button, read the status line. What a user tripped on: a 300-word sentence listed every cut word on one line; clicks
during Run All waited with no notice; picking the scene's first expression again after typing did nothing; a new scene
was not drawn until *segment*; SaG called ordinary words unknown without saying which language it learned."""

import json
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from ris_nb.demo import LOADING, SHIPPED, DemoApp, load_shipped_run, reading_note  # noqa: E402
from ris_nb.picture_inputs import read_sentence  # noqa: E402

NBS = Path(__file__).resolve().parents[1] / "nbs"
LONG = "the highest small red square " + " ".join(["left of the blue star"] * 59)  # 300 words


@pytest.fixture(scope="module")
def data(shaperefs_data):
    torch.set_num_threads(1)
    return shaperefs_data(40, 3, 64)


@pytest.fixture
def app(data, tmp_path):
    "The demo on 40 scenes, opened as 17_demo opens it (Run All still going), with the shipped magnet_tiny."
    a = DemoApp(data, tmp_path / "runs", loading=True)
    a.train_quick = lambda *_, **__: pytest.fail("the demo trained a model although a checkpoint was chosen")
    assert a.ckpt.value == SHIPPED + "magnet_tiny"
    return a


def test_a_long_sentence_gives_a_short_status_line_that_counts_the_cut_words():
    cfg, tok, _, _ = load_shipped_run("magnet_tiny")
    reading = read_sentence(tok, LONG, cfg.data.max_tokens)
    note = reading_note(reading)
    n = len(reading.cut)
    assert n > 250 and len(note) < 300, note
    assert f"{n} words cut, the sentence is too long: {', '.join(reading.cut[:4])} … and {n - 4} more" in note, note
    assert reading_note(read_sentence(tok, "the red square", cfg.data.max_tokens)) == ""


def test_unknown_words_are_counted_as_listed():
    "A word unknown twice is one word unknown: '2 words unknown …: big, near' (was: '3 words … big, near')."
    from ris_nb.picture_inputs import SentenceCoverage

    note = reading_note(SentenceCoverage(kept=["the", "circle"], unknown=["big", "near", "big"], cut=[]))
    assert note.startswith("2 words unknown to this model: big, near"), note


def test_the_app_status_line_stays_short_for_300_words(app):
    app.text.value = LONG
    assert app.run() is not None and len(app.status) < 300 and "words cut" in app.status, app.status


def test_clicks_during_run_all_see_still_loading_until_ready(app, data, tmp_path):
    assert LOADING in app.message.value and LOADING not in app.status
    app.run_btn.click()
    assert app.mask is not None and LOADING in app.message.value and "magnet_tiny" in app.message.value
    app.ready()
    assert LOADING not in app.message.value and app.status in app.message.value
    assert LOADING not in DemoApp(data, tmp_path / "runs").message.value  # outside a notebook's Run All: no notice
    cells = [c for c in json.loads((NBS / "17_demo.ipynb").read_text())["cells"] if c["cell_type"] == "code"]
    exercises = next(i for i, c in enumerate(cells) if "check_choice" in "".join(c["source"]))
    lesson = ["".join(c["source"]) for c in cells[:exercises]]
    assert "loading=True" in "".join(lesson) and "ready()" in lesson[-1], "17 must open loading and end with ready()"


def test_a_new_scene_is_segmented_at_once(app):
    assert app.mask is None and app.figures == []
    app.scene.value = 2
    image, gt, _ = app.scene_objects()
    assert app.mask is not None and app.mask.shape == image.shape[:2] and app.out.outputs, app.status
    assert app.text.value == app.expressions.options[0] and "IoU" in app.figures[0].axes[0].get_title()
    app.scene.value = 3
    assert app.mask is not None and app.text.value == app.expressions.options[0] and app.out.outputs
    app.split.value = next(s for s in app.split.options if s != app.split.value)
    assert app.scene.value == 0 and app.mask is not None and app.out.outputs, app.status


def test_picking_the_first_expression_again_after_typing_segments_again(app):
    app.scene.value = 1
    first = app.expressions.options[0]
    app.text.value = "the circle that nobody typed before"
    assert (app.mask, app.figures, app.out.outputs) == (None, [], ())
    assert app.status == "the input changed: press segment" and app.expressions.value is None
    app.expressions.value = first
    assert app.text.value == first and app.mask is not None and app.out.outputs, app.status
    assert "IoU" in app.figures[0].axes[0].get_title()


def test_unknown_words_name_the_language_the_checkpoint_learned(app):
    app.ckpt.value = SHIPPED + "sag_tiny"
    app.scene.value = 1
    app.text.value = "the highest red square"
    assert app.run() is not None, app.status
    assert "1 word unknown to this model (trained on ShapeRefs' appearance language, these scenes are in the plain" in (
        app.status
    ), app.status
    app.ckpt.value = SHIPPED + "magnet_tiny"  # trained on the plain language: it reads 'highest'
    app.run()
    assert "unknown" not in app.status, app.status


def test_an_unreadable_sentence_or_a_mistake_leaves_no_old_figure(app):
    app.scene.value = 1
    app.text.value = "xyzzy plugh frobnicate"
    assert app.run() is not None and len(app.figures) == 1, app.status
    assert "no word of the sentence is known to this model" in app.status and "RuntimeError" not in app.status
    app.text.value = "   "
    assert app.run() is None and app.out.outputs == () and app.figures == [] and "empty" in app.status


def test_the_demo_opens_on_the_running_scene(shaperefs_data, tmp_path):
    from ris_nb.data.shaperefs import running_scene

    src = "".join("".join(c["source"]) for c in json.loads((NBS / "17_demo.ipynb").read_text())["cells"])
    assert "running_scene(" in src and "show_scene(" in src
    scene = running_scene()
    app = DemoApp(shaperefs_data(300, 0, 64), tmp_path / "runs")
    app.split.value = "val"
    app.show_scene(app.images.index(scene.image_id), scene.sentence)
    image, gt, _ = app.scene_objects()
    assert (image == scene.image).all() and (gt == scene.mask).all() and app.text.value == scene.sentence
    assert app.mask is not None and app.mask.shape == scene.mask.shape, app.status


def test_the_mask_figure_title_is_at_most_three_lines(app):
    """A 300-word sentence: the title wraps, then is cut with "…" (was: ≈ 39 lines above a 248-px image); with the IoU
    line, three lines in all."""
    import numpy as np

    from ris_nb.demo import mask_figure

    square = np.zeros((32, 32), bool)
    square[8:20, 8:20] = True
    image = np.full((32, 32, 3), 200, np.uint8)
    for gt in (None, square):
        title = mask_figure(image, square, gt, LONG).axes[0].get_title()
        lines = title.splitlines()
        assert len(lines) <= 3 and '…"' in title and lines[0].startswith('"the highest small'), title
    short = mask_figure(image, square, None, "the red circle").axes[0].get_title()
    assert short == '"the red circle"', short
    app.text.value = LONG
    assert app.run() is not None and len(app.figures[0].axes[0].get_title().splitlines()) <= 3


def _slow_segment(app, during):
    "A stub of `app.segment` that calls `during()` (what the user does meanwhile) before the real one computes."
    real = app.segment

    def segment(*args, **kwargs):
        during()
        return real(*args, **kwargs)

    return segment


@pytest.mark.parametrize("change", ["checkpoint", "sentence", "scene"])
def test_a_result_whose_inputs_changed_while_it_was_computed_is_dropped(app, change):
    """Switching the model (or the sentence, or the scene) while *segment* runs: the run's result is dropped and the
    status line keeps "the input changed: press segment" (was: the old model's mask and green status under the new
    model's name, 3 of 3 tries in JupyterLab); pressing *segment* then answers the new inputs."""
    app.scene.value = 1
    assert app.mask is not None and "magnet_tiny" in app.status
    do = {
        "checkpoint": lambda: setattr(app.ckpt, "value", SHIPPED + "lavt_tiny"),
        "sentence": lambda: setattr(app.text, "value", "the blue square"),
        "scene": lambda: setattr(app.scene, "value", 2),
    }[change]
    app.live = False  # a scene change asks for segment instead of segmenting at once
    app.segment = _slow_segment(app, do)
    assert app.run() is None
    assert (app.mask, app.figures, app.out.outputs) == (None, [], ()), app.status
    assert app.status == "the input changed: press segment", app.status
    del app.segment  # the real one again
    assert app.run() is not None and app.out.outputs
    assert ("lavt_tiny" if change == "checkpoint" else "magnet_tiny") in app.status, app.status


def test_the_newest_of_two_overlapping_runs_wins(app):
    """A run overtaken by a later one (the kernel handles a second click while the first computes, as ipykernel does)
    leaves the later one's mask, figures and status on screen, whether or not the inputs changed in between."""
    import threading

    for switch in (True, False):
        app.ckpt.value = SHIPPED + "magnet_tiny"
        app.scene.value = 1 if switch else 2
        started, go = threading.Event(), threading.Event()
        app.segment = _slow_segment(app, lambda: (started.set(), go.wait(60)))
        first: list = []
        t = threading.Thread(target=lambda: first.append(app.run()))
        t.start()
        assert started.wait(60)
        del app.segment
        if switch:
            app.ckpt.value = SHIPPED + "sag_tiny"
        second = app.run()
        status, figures = app.status, list(app.figures)
        go.set()
        t.join(60)
        assert len(first) == 1 and first[0] is None and second is not None and app.mask is second, app.status
        assert app.status == status and app.figures == figures and app.out.outputs, app.status
        assert ("sag_tiny" if switch else "magnet_tiny") in app.status, app.status


def test_a_shipped_checkpoint_file_can_be_typed(app):
    "The typed-path box takes a shipped checkpoint's file too (was: `… is not a ris_nb checkpoint`)."
    from ris_nb.shipped import shipped_dir

    app.scene.value = 1
    app.ckpt_path.value = str(shipped_dir() / "sag_tiny.pt")
    assert app.run() is not None and app.status.startswith("sag_tiny (typed path "), app.status
    assert "appearance language" in app.status or "unknown" not in app.status, app.status


def test_a_quick_checkpoint_trained_for_a_run_is_that_run_s_own_choice(app):
    "With nothing chosen, *segment* trains a quick one and selects it: that selection does not drop its own result."
    app.scene.value = 1
    app.ckpt.value = None
    app.train_quick = lambda *_, **__: app.refresh_checkpoints(select=SHIPPED + "lavt_tiny")  # a stand-in training
    assert app.run() is not None and app.status.startswith("lavt_tiny ("), app.status
