"""`mfcore --help`, `plugins` and `models`, with every plugin of the monorepo installed, import neither
MindSpore nor numpy: listing what is installed must stay instant (a plugin loads its heavy parts lazily)."""
import subprocess
import sys

import pytest

CHECK = ("import sys\nfrom mfcore.cli import main\nrc = main(sys.argv[1:])\n"
         "heavy = sorted(m for m in ('mindspore', 'numpy', 'torch', 'fastapi', 'uvicorn', 'lm_eval') if m in sys.modules)\n"
         "assert not heavy, f'imported {heavy}'\nsys.exit(rc)")


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["models", "--json"]])
def test_listing_commands_import_neither_mindspore_nor_numpy(args):
    result = subprocess.run([sys.executable, "-c", CHECK, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "convert" in subprocess.run([sys.executable, "-m", "mfcore", "plugins"], capture_output=True,
                                       text=True).stdout  # the plugins really were loaded
