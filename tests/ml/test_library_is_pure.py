"""`ml/` is a library of its own: importing any of it never pulls in Django."""
import pkgutil
import subprocess
import sys

import ml
from tests.helpers import REPO


def test_no_module_of_ml_imports_django():
    modules = [m.name for m in pkgutil.walk_packages(ml.__path__, "ml.") if not m.name.endswith("__main__")]
    code = (
        "import importlib, os, sys\n"
        "os.environ.pop('DJANGO_SETTINGS_MODULE', None)\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "print(len(leaked))\n"
        "sys.exit(1 if leaked else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(modules) >= 5
