"""The file boundary: no module of the core, plugins or adapters reads or writes around it.

Every read of a user-named or data-root path goes through :mod:`cxr_attrib.safeio`,
every write through :mod:`cxr_attrib.outputs` (see CONTRIBUTING.md, "File I/O: the
one boundary"). This test walks the syntax tree of every module outside those and
fails on a call that opens, reads, writes or connects to a path by itself. A call
that is safe for a stated reason goes in :data:`ALLOWED` with that reason; an entry
that no longer matches anything fails too, so the list never grows stale.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("cxr_attrib", "plugins", "adapters")
BOUNDARY = {"cxr_attrib/safeio.py", "cxr_attrib/outputs.py", "cxr_attrib/paths.py"}

# Calls that touch a path. Keys: the callee as written (module.function); "*.name"
# matches a method of that name on any object.
FORBIDDEN = {
    "open": "builtin open",
    "os.open": "os.open",
    "io.open": "io.open",
    "*.read_text": "Path.read_text",
    "*.read_bytes": "Path.read_bytes",
    "*.write_text": "Path.write_text",
    "*.write_bytes": "Path.write_bytes",
    "Image.open": "Image.open",
    "sqlite3.connect": "sqlite3.connect",
    "np.load": "np.load",
    "np.save": "np.save",
    "np.savez": "np.savez",
    "np.savez_compressed": "np.savez_compressed",
    "np.fromfile": "np.fromfile",
    "*.tofile": "ndarray.tofile",
    "torch.load": "torch.load",
    "torch.save": "torch.save",
    "pydicom.dcmread": "pydicom.dcmread",
    "*.save": ".save(",
    "*.open": "Path.open",
}

ALLOWED: dict[tuple[str, str], str] = {
    ("cxr_attrib/imageio.py", "Image.open"):
        "decodes a stream that safeio.open_regular opened (or in-memory bytes); never a path",
    ("cxr_attrib/imageio.py", "pydicom.dcmread"):
        "decodes a stream that safeio.open_regular opened (or in-memory bytes); never a path",
    ("cxr_attrib/benchmarks/padchest.py", "Image.open"):
        "reads the header of a stream that safeio.open_regular opened",
    ("cxr_attrib/html_page.py", "Path.read_text"):
        "reads a Jinja2 template shipped inside the package (importlib.resources), never a user-named path",
    ("cxr_attrib/cli.py", ".save("):
        "Attribution.save, which writes through outputs.write_files",
    ("plugins/cxr_attrib_phantom/demo.py", ".save("):
        "Attribution.save, which writes through outputs.write_files",
    ("cxr_attrib/compare_cli.py", ".save("):
        "Comparison.save, which writes through outputs.write_files",
}


def _callee(node: ast.Call) -> str | None:
    """``module.function`` or ``*.method`` for the call, as FORBIDDEN spells it."""
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        if isinstance(func.value, ast.Name) and f"{func.value.id}.{func.attr}" in FORBIDDEN:
            return f"{func.value.id}.{func.attr}"
        if func.attr == "open" and isinstance(func.value, ast.Name) and (func.value.id[:1].isupper()
                                                                         or func.value.id == "cls"):
            return None  # a class's own constructor (Store.open), which goes through the boundary
        return f"*.{func.attr}"
    return None


def _in_memory_names(tree: ast.AST) -> set[str]:
    """Names bound to ``io.BytesIO()`` / ``BytesIO()`` anywhere in the module (buffers, not paths)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            made = (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None))
            if made == "BytesIO":
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _is_buffer(node: ast.expr, buffers: set[str]) -> bool:
    """Whether an argument is an in-memory buffer: a name bound to ``BytesIO()`` or a ``BytesIO(...)`` call."""
    if isinstance(node, ast.Name):
        return node.id in buffers
    if isinstance(node, ast.Call):
        func = node.func
        return (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) == "BytesIO"
    return False


def violations(path: Path) -> list[tuple[str, int, str]]:
    """(label, line, source) of every forbidden call in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))  # io-boundary: the test reads source
    buffers = _in_memory_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        callee = _callee(node)
        if callee not in FORBIDDEN:
            continue
        if node.args and _is_buffer(node.args[0], buffers):
            continue  # (de)serialising an in-memory buffer; its bytes went through the boundary
        found.append((FORBIDDEN[callee], node.lineno, ast.get_source_segment(path.read_text(encoding="utf-8"),
                                                                              node) or ""))
    return found


def _scanned_modules() -> list[Path]:
    return sorted(p for folder in SCANNED for p in (ROOT / folder).rglob("*.py")
                  if p.relative_to(ROOT).as_posix() not in BOUNDARY)


def test_no_module_reads_or_writes_around_the_boundary():
    used: Counter = Counter()
    offending = []
    for path in _scanned_modules():
        relative = path.relative_to(ROOT).as_posix()
        for label, line, source in violations(path):
            if (relative, label) in ALLOWED:
                used[(relative, label)] += 1
            else:
                offending.append(f"{relative}:{line}: {label}: {source[:100]}")
    assert not offending, (
        "file I/O outside the boundary (use cxr_attrib.safeio for reads and cxr_attrib.outputs for "
        "writes; see CONTRIBUTING.md 'File I/O: the one boundary'):\n" + "\n".join(offending))
    stale = sorted(set(ALLOWED) - set(used))
    assert not stale, f"allow-list entries that match nothing any more (remove them): {stale}"


@pytest.mark.parametrize("source, label", [
    ("open('x')", "builtin open"),
    ("Path('x').read_text()", "Path.read_text"),
    ("p.write_bytes(b'')", "Path.write_bytes"),
    ("Image.open(p)", "Image.open"),
    ("sqlite3.connect(p)", "sqlite3.connect"),
    ("np.load(p)", "np.load"),
    ("np.save(p, a)", "np.save"),
    ("torch.load(p)", "torch.load"),
    ("image.save(p)", ".save("),
    ("path.open('rb')", "Path.open"),
])
def test_the_scanner_sees_each_forbidden_call(tmp_path, source, label):
    module = tmp_path / "m.py"
    module.write_text(source + "\n")  # io-boundary: test fixture
    assert [v[0] for v in violations(module)] == [label]


def test_the_scanner_lets_in_memory_buffers_through(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import io\nbuffer = io.BytesIO()\nimage.save(buffer, format='PNG')\n"  # io-boundary: fixture
                      "np.save(buffer, a)\ntorch.load(io.BytesIO(blob), weights_only=True)\n")
    assert violations(module) == []
