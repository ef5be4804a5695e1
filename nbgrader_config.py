"""nbgrader's settings for the ris_nb course (explained in nbs/19_course.ipynb).

`ris_nb course --nbgrader DIR` lays out an nbgrader course in DIR (`source/<lesson>/<lesson>.ipynb`: the marked teacher
notebooks, with `images/` and `results/`) and writes this file there; run nbgrader from DIR."""

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import AssignLatePenalties, CheckCellMetadata, ClearHiddenTests, GetGrades
from nbgrader.preprocessors import IgnorePattern, LimitOutput, SaveAutoGrades

from ris_nb.course import exercise_executor

c = get_config()  # noqa: F821 (nbgrader defines it when it reads this file)

# Autograde runs what `ris_nb grade` runs: the code cells of the `## Exercises` section (it runs on its own from its
# first cell), not those marked `#| slow` or `#| gpu` (their checks carry no points). The lesson's cells above it are
# not run: its training cells cost nothing. The rest is nbgrader's own list.
c.Autograde.autograde_preprocessors = [
    exercise_executor(),
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]

# Seconds one cell may run under autograde (nbgrader's default: 30). The slowest exercise cell took 10 s (05_encoders'
# pretrained text encoder, one thread on a loaded 2-core machine): 120 leaves room for a slower machine.
c.Execute.timeout = 120

# The feedback shows the graded notebook without its hidden tests: no Think key, no hidden check.
c.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, CSSHTMLHeaderPreprocessor]
