"""User code loading: --import files and modules, and their one-line errors."""

import subprocess
import sys

import pytest

from t5lab.errors import T5LabError
from t5lab.plugins import import_module_or_file, import_user_modules


def test_file_is_imported_once(tmp_path):
    f = tmp_path / "mine.py"
    f.write_text("COUNT = [0]\nCOUNT[0] += 1\ndef fn():\n    return 42\n")
    a = import_module_or_file(str(f))
    b = import_module_or_file(str(f))
    assert a is b and a.COUNT == [1] and a.fn() == 42


def test_dotted_module():
    assert import_module_or_file("json").dumps([1]) == "[1]"


def test_errors_are_one_line(tmp_path):
    with pytest.raises(T5LabError, match=r"^--import .*nope\.py: no such file"):
        import_user_modules([str(tmp_path / "nope.py")])
    with pytest.raises(T5LabError, match="cannot import"):
        import_user_modules(["no_such_module_t5lab"])


def test_cli_reports_bad_import_with_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "t5lab.cli", "--import", str(tmp_path / "x.py"), "train"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: --import") and len(proc.stderr.strip().splitlines()) == 1
