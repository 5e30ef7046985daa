"""The three roles, as Django groups, and what each may do."""

HEMATOLOGIST = "hematologist"
ANNOTATOR = "annotator"
ADMIN = "admin"
ROLES = (HEMATOLOGIST, ANNOTATOR, ADMIN)

_VIEW = [
    "patients.view_patient",
    "slides.view_slide",
    "cells.view_cell",
    "jobs.view_job",
    "registry.view_modelversion",
]

ROLE_PERMISSIONS: dict[str, list[str]] = {
    HEMATOLOGIST: _VIEW
    + [
        "patients.add_patient",
        "patients.change_patient",
        "slides.add_slide",
        "slides.analyze_slide",
        "slides.signoff_slide",
        "cells.reclassify_cell",
    ],
    ANNOTATOR: _VIEW
    + [
        "cells.add_cell",
        "cells.change_cell",
        "cells.delete_cell",
        "cells.reclassify_cell",
    ],
    ADMIN: _VIEW
    + [
        "patients.add_patient",
        "patients.change_patient",
        "patients.delete_patient",
        "patients.view_deletion",
        "slides.add_slide",
        "slides.analyze_slide",
        "slides.signoff_slide",
        "slides.delete_slide",
        "cells.add_cell",
        "cells.change_cell",
        "cells.delete_cell",
        "cells.reclassify_cell",
        "registry.add_modelversion",
        "registry.change_modelversion",
    ],
}
