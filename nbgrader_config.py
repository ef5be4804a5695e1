"""nbgrader's settings for the ris_nb course (nbs/19_course.ipynb, nbs/98e_grading.ipynb).

`ris_nb course --nbgrader DIR` lays out an nbgrader course in DIR (`source/<lesson>/<lesson>.ipynb`: the marked teacher
notebooks, with `images/` and `results/`) and writes this file there; run nbgrader from DIR."""

import os

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import AssignLatePenalties, CheckCellMetadata, ClearOutput, DeduplicateIds
from nbgrader.preprocessors import GetGrades, LimitOutput, OverwriteCells, OverwriteKernelspec, SaveAutoGrades

from ris_nb.grading import nbgrader_parts

ris_nb = nbgrader_parts()
c = get_config()  # noqa: F821 (nbgrader defines it when it reads this file)

# One course, its exchange beside this file: `nbgrader release_assignment`, `fetch_assignment`, `submit` and `collect`
# work on one machine with no other setup (a student passes --Exchange.root=DIR/exchange --course ris_nb).
c.CourseDirectory.course_id = "ris_nb"
c.Exchange.root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exchange")

# Before nbgrader's checks, each cell gets the nbgrader metadata of the assignment's cell it is (from the gradebook): a
# copied cell's (a duplicated grade id) or a student's own is dropped, a changed one restored, a moved `## Exercises`
# heading put back; each named in the log. One bad submission no longer stops or blanks the others.
c.Autograde.sanitize_preprocessors = [
    ClearOutput,
    ris_nb["SanitizeSubmission"],
    DeduplicateIds,
    OverwriteKernelspec,
    OverwriteCells,
    CheckCellMetadata,
]

# Autograde runs no kernel: a student's code could patch the checks there, or read source/. `GradeConfined` grades as
# `ris_nb grade` does (the student's cells in a fresh process that cannot read source/, the teacher's checks here, as
# a judge) and writes each check cell's verdict as the output nbgrader scores; `ReasoningRead` gives the 0-point
# "Your reasoning" cells their 0, so none waits for a manual grade. A submission it cannot grade raises, named.
c.Autograde.autograde_preprocessors = [
    ris_nb["GradeConfined"],
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    ris_nb["ReasoningRead"],
    AssignLatePenalties,
    CheckCellMetadata,
]

# A submitted file that is no notebook (UTF-16, empty, a link) is named in one line before nbgrader tries to read it.
c.Autograde.pre_convert_hook = ris_nb["name_unreadable_submissions"]

# Seconds one submission's exercise section may run in its process (its start, Python and torch, not counted).
c.GradeConfined.timeout = 300

# The feedback: the graded notebook without its hidden tests (cleared from the teacher's locked cells: a marker a
# student pasted is their text); locked and hidden-test cells show only the verdict.
c.GenerateFeedback.preprocessors = [
    GetGrades,
    ris_nb["ClearHiddenLocked"],
    ris_nb["FeedbackOutputs"],
    CSSHTMLHeaderPreprocessor,
]

# `nbgrader export`: a submission autograde could not grade is `not graded` in grades.csv, never 0.0.
c.ExportApp.plugin_class = ris_nb["NotGradedExport"]
