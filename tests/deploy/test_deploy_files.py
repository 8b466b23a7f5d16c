"""The deployment files stay true to the repository: every file a Dockerfile, Compose file or
manifest names exists, the images are built with the one recipe CI uses (deploy/build.sh), and
every setting the manifests pass reaches a real griffin-server flag."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cpu"]


def instructions(dockerfile):
    """(instruction, arguments) pairs with line continuations joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def server_flags():
    source = (ROOT / "server" / "griffin_server_main.cc").read_text()
    return set(re.findall(r"ABSL_FLAG\([^,]+,\s*(\w+)", source))


def presets():
    return {p["name"] for p in json.loads((ROOT / "CMakePresets.json").read_text())["configurePresets"]}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_existing_files(dockerfile):
    for word, args in instructions(dockerfile):
        if word == "COPY" and "--from=" not in args:
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"
        if word == "COPY" and "--from=build /src/" in args:
            source = args.split()[1].removeprefix("/src/")
            assert (ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_builds_with_the_ci_recipe(dockerfile):
    runs = " ".join(args for word, args in instructions(dockerfile) if word == "RUN")
    match = re.search(r"deploy/build\.sh --serve ([\w-]+) --target ([\w\- ]+?) &&", runs)
    assert match, f"{dockerfile.name} must build with deploy/build.sh"
    preset, targets = match.group(1), match.group(2).split()
    assert preset in presets()
    for binary in re.findall(r"build/(\w+)/bin/([\w-]+)", runs):
        assert binary[0] == preset and binary[1] in targets
    for target in targets:
        assert re.search(rf"add_executable\({re.escape(target)}\b",
                         (ROOT / "server" / "CMakeLists.txt").read_text()), target
    # make test (and so CI) builds through the same script.
    assert re.search(r"^\t@?deploy/build\.sh", (ROOT / "Makefile").read_text(), re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def entrypoint_variables_and_flags():
    text = (DEPLOY / "docker-entrypoint.sh").read_text()
    variables = set(re.findall(r"\$\{(GRIFFIN_\w+)", text))
    flags = set(re.findall(r"--(\w+)=", text))
    return variables, flags


def test_entrypoint_flags_exist_in_the_server():
    _, flags = entrypoint_variables_and_flags()
    missing = flags - server_flags()
    assert not missing, f"docker-entrypoint.sh passes unknown flags {missing}"


def test_every_griffin_variable_is_consumed():
    variables, _ = entrypoint_variables_and_flags()
    used = set()
    # The images' runtime settings (ENV); a RUN step's GRIFFIN_GIT_COMMIT is a build setting.
    for dockerfile in DOCKERFILES:
        env = " ".join(args for word, args in instructions(dockerfile) if word == "ENV")
        used |= set(re.findall(r"\b(GRIFFIN_[A-Z_]+)\b", env))
    for path in [DEPLOY / "compose.yaml", DEPLOY / "compose.cpu.yaml",
                 DEPLOY / "k8s" / "deployment.yaml"]:
        used |= set(re.findall(r"\b(GRIFFIN_[A-Z_]+)\b", path.read_text()))
    assert used <= variables, f"set but never read by the entrypoint: {used - variables}"


@pytest.mark.parametrize("compose", ["compose.yaml", "compose.cpu.yaml"])
def test_compose_mounts_existing_files(compose):
    spec = yaml.safe_load((DEPLOY / compose).read_text())
    for name, service in spec["services"].items():
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("."):
                assert (DEPLOY / host).exists(), f"{compose}: {name} mounts missing {host}"
    tags = {service.get("image") for service in spec["services"].values()}
    built = set()
    for dockerfile in DOCKERFILES:
        built |= set(re.findall(r"-t (griffin-server:\w+)", dockerfile.read_text()))
    assert {t for t in tags if t and t.startswith("griffin-server")} <= built


def test_kustomization_resources_exist_and_parse():
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        documents = list(yaml.safe_load_all((DEPLOY / "k8s" / resource).read_text()))
        assert documents and all("kind" in d for d in documents), resource
    deployment = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    drain = float(next(e["value"] for e in container["env"] if e["name"] == "GRIFFIN_DRAIN_TIMEOUT"))
    assert pod["terminationGracePeriodSeconds"] > drain + 5
    assert container["readinessProbe"] and container["livenessProbe"]
    assert container["lifecycle"]["preStop"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_default_model_is_shipped():
    for dockerfile in DOCKERFILES:
        env = " ".join(args for word, args in instructions(dockerfile) if word == "ENV")
        model = re.search(r"GRIFFIN_MODEL=(\S+)", env).group(1)
        assert (ROOT / model.replace("/models/", "models/", 1) / "config.json").exists(), model


def require(tool):
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed (deploy/install-deps.sh installs it)", pytrace=False)


def test_nginx_config_is_valid(tmp_path):
    require("nginx")
    conf = (DEPLOY / "nginx" / "nginx.conf").read_text()
    conf = re.sub(r"griffin-\d:", "127.0.0.1:", conf).replace("/tmp/", f"{tmp_path}/")
    (tmp_path / "nginx.conf").write_text(conf)
    out = subprocess.run(["nginx", "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_prometheus_config_is_valid():
    require("promtool")
    out = subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
