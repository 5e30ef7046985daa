"""The test suite's fixtures, for the measurements run with pytest (``bench/edits_and_exports.py``)."""
from tests.conftest import *  # noqa: F401,F403
from tests.webapp.conftest import *  # noqa: F401,F403
