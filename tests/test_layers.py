"""The package's imports flow one way (cli -> jobs -> proxy -> engine -> detectors -> data ->
config -> search spaces), read from the source with `ast`, lazy imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nassearch"

# Lowest first. A module may import its own layer and the layers below it, never above.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "atomic", "console", "output_paths", "status", "jsonl", "proxy_result"),
    ("search_spaces",),
    ("config", "controllers", "trial_spec"),
    ("device", "distributed", "records", "stop_signal", "cluster"),
    ("data",),
    ("detectors",),
    ("engine",),
    ("proxy_eval",),
    (
        "search", "export", "train", "fidelity", "report", "ranking", "show", "summary",
        "onnx_export", "onnx_check", "recipes", "signal_check", "controller_log",
    ),
    ("cli", "__main__"),
]  # fmt: skip
# Arrows the layer order would allow but the design forbids.
FORBIDDEN = {
    "train": ("proxy_eval",),  # full training shares the engine, not the proxy
    "engine": ("proxy_eval",),
    "controllers": ("config", "data", "detectors", "engine", "proxy_eval"),
    "detectors": ("data",),  # a detector takes tensors, not datasets
}


def part_of(module: str) -> str:
    """`nassearch.detectors.necks.fpn` -> `detectors`."""
    return module.split(".")[1] if "." in module else module


def layer_of(part: str) -> int:
    for index, names in enumerate(LAYERS):
        if part in names:
            return index
    raise AssertionError(f"nassearch.{part} is in no layer: add it to LAYERS")


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, imported module) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # `from nassearch.x import y` may import the submodule nassearch.x.y
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return found


def violations(root: Path = PACKAGE) -> list[str]:
    problems: list[str] = []
    for path in sorted(root.rglob("*.py")):
        source = module_name(path, root)
        part = part_of(source)
        here = layer_of(part) if source != "nassearch" else len(LAYERS)
        for line, target in imports(path, root):
            where = f"{path.relative_to(root.parent)}:{line}"
            if part == "search_spaces" and target.split(".")[0] == "torch":
                problems.append(f"{where}: search_spaces imports torch ({target})")
            if not target.startswith("nassearch.") or part_of(target) == part:
                continue
            other = part_of(target)
            if not (root / other).exists() and not (root / f"{other}.py").exists():
                continue  # `from nassearch import x` resolved as nassearch.x.name
            if layer_of(other) > here:
                problems.append(f"{where}: {source} imports nassearch.{other} (a higher layer)")
            if other in FORBIDDEN.get(part, ()):
                problems.append(f"{where}: {source} imports nassearch.{other} (forbidden)")
    return list(dict.fromkeys(problems))


def test_imports_flow_one_way() -> None:
    assert violations() == []


def test_the_check_finds_an_upward_import_and_torch_in_a_search_space(tmp_path: Path) -> None:
    root = tmp_path / "nassearch"
    (root / "search_spaces").mkdir(parents=True)
    (root / "detectors").mkdir()
    (root / "search_spaces" / "__init__.py").write_text("import torch\n")
    (root / "search_spaces" / "bad.py").write_text(
        "def f():\n    from nassearch.detectors.build import build_detector\n"
    )
    (root / "detectors" / "__init__.py").write_text("from nassearch.search_spaces import x\n")
    (root / "train.py").write_text("from nassearch.proxy_eval.trainer import Trainer\n")
    (root / "proxy_eval").mkdir()
    (root / "proxy_eval" / "trainer.py").write_text("")
    found = violations(root)
    assert any("search_spaces imports torch" in p for p in found), found
    assert any("bad.py:2" in p and "a higher layer" in p for p in found), found
    assert any("train.py:1" in p and "forbidden" in p for p in found), found
    assert not any("detectors/__init__.py" in p for p in found), found  # downward: fine


@pytest.mark.parametrize("module", ["nassearch.search_spaces", "nassearch.config"])
def test_search_spaces_and_config_import_without_torch(module: str) -> None:
    import subprocess
    import sys

    code = (
        "import sys, importlib\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"importlib.import_module({module!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith('nassearch.search_spaces')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
