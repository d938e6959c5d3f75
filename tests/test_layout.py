"""The code's shape: the package never imports Streamlit, argparse lives in the CLI package only,
and the rules that must have one home have one."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import tisfm_core

REPO = Path(__file__).resolve().parents[1]


def test_importing_every_core_module_never_imports_streamlit():
    names = [m.name for m in pkgutil.walk_packages(tisfm_core.__path__, "tisfm_core.")
             if m.name != "tisfm_core.__main__"]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('streamlit', 'plotly_express')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert len(names) > 30
    assert out.stdout.strip() == "[]", out.stdout


def _sources(*folders):
    for folder in folders:
        yield from sorted((REPO / folder).rglob("*.py"))


def test_argparse_only_in_the_cli_package_and_no_path_hacks_in_the_app():
    for path in _sources("tisfm_core", "tisfm_app"):
        if "cli" in path.relative_to(REPO).parts:
            continue
        assert not re.search(r"^\s*(import argparse|from argparse)", path.read_text(), re.M), path
    for path in [REPO / "app.py", *_sources("pages", "tisfm_app")]:
        assert "sys.path.insert" not in path.read_text(), path


def test_one_definition_of_the_variants_the_kernel_slot_rule_and_the_penalties():
    text = {p: p.read_text() for p in _sources("tisfm_core", "tisfm_app", "pages")}
    text[REPO / "app.py"] = (REPO / "app.py").read_text()

    def defining(pattern):
        return [p.name for p, t in text.items() if re.search(pattern, t, re.M)]
    assert defining(r"^VARIANTS = ") == ["model.py"]
    assert defining(r"^MODEL_VARIANTS = ") == ["specs.py"]
    assert defining(r"^PENALTIES = ") == ["prox.py"]
    assert defining(r"^MIN_LR = ") == ["training.py"]
    # the kernel-slot arithmetic (W - w) // 2 appears in kernel_slots only
    assert defining(r"\(\s*\w*width\w*\s*\)?\s*-\s*\w*widths?\w*\s*\)?\s*//\s*2") == ["motifs.py"]
