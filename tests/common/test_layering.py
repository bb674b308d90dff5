"""common/ is domain-free: no module in it imports medvl or scene3d."""
from __future__ import annotations

import ast
from pathlib import Path

COMMON = Path(__file__).resolve().parents[2] / "common"


def test_common_imports_no_domain_package():
    offenders = []
    for path in COMMON.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(COMMON.parent)}: {n}" for n in names
                          if n.split(".")[0] in ("medvl", "scene3d")]
    assert not offenders, offenders
    assert len(list(COMMON.rglob("*.py"))) > 5  # the scan really looked at the package
