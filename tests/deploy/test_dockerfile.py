"""The Dockerfile is not built here (no container engine); these pin that it mirrors the tested install."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def test_it_copies_every_package_the_project_installs():
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
        "include"
    ]
    packages = {p.rstrip("*") for p in include}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", DOCKERFILE, re.M))
    assert packages <= copied, packages - copied


def test_it_installs_in_the_makefiles_order_with_the_same_guards():
    steps = [
        DOCKERFILE.index('pip install "torch=='),
        DOCKERFILE.index('pip install ".[gpu]"'),
        DOCKERFILE.index("pip uninstall -y torchvision torchaudio torchcodec"),
    ]
    assert steps == sorted(steps)
    assert "DS_BUILD_OPS=0" in DOCKERFILE and "DS_BUILD_OPS=0" in MAKEFILE
    assert "uninstall -q -y torchvision torchaudio torchcodec" in MAKEFILE
    torch_pin = re.search(r"torch==(\d+\.\d+)", MAKEFILE).group(1)
    assert f"torch=={torch_pin}." in DOCKERFILE
    python = re.search(r'requires-python = ">=(\d+\.\d+)', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"python{python}" in DOCKERFILE


def test_it_runs_as_the_user_the_chart_expects():
    values = (ROOT / "deploy" / "helm" / "mgpo" / "values.yaml").read_text()
    assert "runAsUser: 1000" in values and "USER 1000:1000" in DOCKERFILE
    ray_version = re.search(r'version: "(\d+\.\d+)\.\d+"', values).group(1)
    assert f'"ray[default]>={ray_version}' in (ROOT / "pyproject.toml").read_text()
