"""The tests mirror the package: every module of lth has a test file of its own under tests/unit/."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "tests" / "unit"

# Modules whose tests live under another name (module path relative to lth/ → test file relative to tests/unit/).
ELSEWHERE: dict[str, str] = {
    # these packages' modules are tested together, in one file per package
    **{f"structured/{m}.py": "structured/test_structured.py" for m in ("compact", "flops", "layout", "scratch")},
    **{f"supermask/{m}.py": "supermask/test_supermask.py"
       for m in ("config", "heuristic", "layers", "swap", "topk", "weights")},
    "models/base.py": "models/test_models.py",  # the registry and reinitialize, with the models they build
}


def modules(package: Path = ROOT / "lth") -> list[str]:
    """Every module file relative to lth/, without __init__.py, __main__.py and the packaged configs."""
    return sorted(
        str(p.relative_to(package)) for p in package.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py") and "conf" not in p.relative_to(package).parts[:-1]
    )


def own_tests(module: str, unit: Path = UNIT) -> list[Path]:
    """The test files that count as `module`'s own (see the module docstring and ELSEWHERE)."""
    if module in ELSEWHERE:
        path = unit / ELSEWHERE[module]
        return [path] if path.is_file() else []
    rel = Path(module)
    stem = rel.stem
    if len(rel.parts) == 1:
        path = unit / f"test_{stem}.py"
        return [path] if path.is_file() else []
    folder = unit.joinpath(*rel.parts[:-1])
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("test_*.py") if stem in p.stem[len("test_"):])


def test_rules_on_a_synthetic_tree(tmp_path):
    pkg, unit = tmp_path / "lth", tmp_path / "unit"
    for rel in ("__init__.py", "__main__.py", "io.py", "conf/__init__.py", "data/__init__.py", "data/vision.py",
                "data/base.py"):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).touch()
    (unit / "data").mkdir(parents=True)
    (unit / "data" / "test_vision_loaders.py").touch()
    (unit / "test_iox.py").touch()  # a near miss does not count for io.py
    assert modules(pkg) == ["data/base.py", "data/vision.py", "io.py"]
    assert [p.name for p in own_tests("data/vision.py", unit)] == ["test_vision_loaders.py"]
    assert own_tests("data/base.py", unit) == []
    assert own_tests("io.py", unit) == []
    (unit / "test_io.py").touch()
    assert own_tests("io.py", unit) == [unit / "test_io.py"]


def test_every_module_has_a_test_file_of_its_own():
    found = modules()
    assert "masks.py" in found and "data/vision.py" in found, found
    missing = [m for m in found if not own_tests(m)]
    expected = {
        m: (f"tests/unit/test_{Path(m).stem}.py" if "/" not in m
            else f"tests/unit/{Path(m).parent}/test_*{Path(m).stem}*.py")
        for m in missing
    }
    assert not missing, "modules without a test file of their own:\n" + "\n".join(
        f"  lth/{m}: expected {e}" for m, e in expected.items())


def test_elsewhere_mapping_points_at_real_files():
    stale = {m: t for m, t in ELSEWHERE.items() if not (ROOT / "lth" / m).is_file() or not (UNIT / t).is_file()}
    assert not stale, f"ELSEWHERE names a module or test file that does not exist: {stale}"
