"""Layering: governance/, storage/ and collectors/ never import textual or the TUI."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADLESS = ("governance", "storage", "collectors")


def forbidden_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [("." * node.level) + (node.module or "")]
        else:
            continue
        for name in names:
            parts = name.lstrip(".").split(".")
            if parts[0] in ("textual", "textual_plot") or "tui" in parts:
                found.append(name)
    return found


def test_headless_layers_do_not_import_the_tui() -> None:
    offenders = [f"{path.relative_to(ROOT)} imports {name}"
                 for folder in HEADLESS for path in sorted((ROOT / folder).rglob("*.py"))
                 for name in forbidden_imports(path)]
    assert offenders == []


def test_the_check_catches_offenders(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from textual.app import App\nfrom ..tui.app import WatchApp\nimport json\n")
    assert forbidden_imports(probe) == ["textual.app", "..tui.app"]
