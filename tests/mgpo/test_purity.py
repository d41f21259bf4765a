import pkgutil
import subprocess
import sys

import mgpo

BLOCKED = ("ray", "vllm", "deepspeed", "redis", "fastapi", "prometheus_client", "uvicorn")


def test_every_core_module_imports_with_infrastructure_blocked():
    modules = [m.name for m in pkgutil.walk_packages(mgpo.__path__, "mgpo.")]
    assert "mgpo.boxes" in modules and "mgpo.models.tiny" in modules
    script = (
        "import importlib, sys\n"
        f"for name in {BLOCKED!r}: sys.modules[name] = None\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
