"""The top-level package: cheap to import, subpackages reachable as attributes."""

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def test_import_is_cheap_and_loads_no_torch():
    assert _run("import sys, torchslim; print('torch' in sys.modules)") == "False"


def test_subpackages_load_on_attribute_access():
    out = _run("import torchslim; m = torchslim.models.create('lenet5', num_classes=10); print(type(m).__name__)")
    assert out == "LeNet5"


def test_unknown_attribute_raises_attribute_error():
    out = _run("import torchslim\ntry:\n    torchslim.nosuch\nexcept AttributeError as e:\n    print(e)")
    assert out == "module 'torchslim' has no attribute 'nosuch'"


def test_profile_stays_callable_after_the_subpackage_is_imported():
    code = (
        "import torchslim\n"
        "m = torchslim.models.create('lenet5', num_classes=10)\n"
        "a = torchslim.profile(m).params\n"
        "import torchslim.profile.counting\n"
        "b = torchslim.profile(m).params\n"
        "print(a, b, callable(torchslim.profile))"
    )
    assert _run(code) == "62136 62136 True"
