"""`tractatus-watch gateway` takes agl-server's arguments: Hydra overrides and config files,
composed as agl-server composes them (checked against `agl-server --cfg job`); which of an
option and an override wins; the key on the command line; bad arguments as one line."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tractatus_watch.collectors.gateway_config import ConfigArgs, GatewayConfigError, compose

from support import clients

from .collectors.conftest import AGL_SERVER, free_port, wait_healthy

CUSTOM = """\
defaults:
  - server
  - _self_
port: 9100
default_proxy:
  model_name: custom/model-from-file
"""
STANDALONE = """\
host: 127.0.0.1
port: 9200
key: ""
default_proxy:
  model_name: standalone/model
  include_log_probs: false
  train: {temperature: 0.9}
  val: {temperature: 0.1}
"""


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("TRACTATUS_WATCH", "AGL_KEY"))}
    return {**base, **extra}


@pytest.fixture(scope="module")
def conf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("conf")
    (folder / "custom.yaml").write_text(CUSTOM)
    (folder / "standalone.yaml").write_text(STANDALONE)
    return folder


def cases(conf: Path) -> dict[str, tuple[list[str], ConfigArgs]]:
    """agl-server's argv and the same arguments as we take them."""
    d = str(conf)
    return {
        "packaged": ([], ConfigArgs()),
        "overrides": (
            ["default_proxy.model_name=org/m-1", "+extra.flag=true", "++port=9001",
             "~default_proxy.include_routed_experts", "default_proxy.train.temperature=0.25"],
            ConfigArgs(("default_proxy.model_name=org/m-1", "+extra.flag=true", "++port=9001",
                        "~default_proxy.include_routed_experts",
                        "default_proxy.train.temperature=0.25"))),
        "config dir extends server": (
            ["-cd", d, "-cn", "custom", "default_proxy.val.temperature=0.1"],
            ConfigArgs(("default_proxy.val.temperature=0.1",), config_dir=d,
                       config_name="custom")),
        "config path": (["--config-path", d, "--config-name", "standalone"],
                        ConfigArgs(config_path=d, config_name="standalone")),
        "config path pkg": (["-cp", "pkg://agentlightning.config", "host=10.1.2.3"],
                            ConfigArgs(("host=10.1.2.3",),
                                       config_path="pkg://agentlightning.config")),
        # Errors: -cp replaces the package's folder, so `server` is not found.
        "config path without server": (["-cp", d, "-cn", "custom"],
                                       ConfigArgs(config_path=d, config_name="custom")),
        "unknown key": (["foo=1"], ConfigArgs(("foo=1",))),
        "relative config path": (["-cp", "conf", "-cn", "x"],
                                 ConfigArgs(config_path="conf", config_name="x")),
    }


@pytest.fixture(scope="module")
def agl_composed(conf_dir: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> dict[str, tuple[int, str]]:
    """`agl-server --cfg job ARGS` for every case, side by side: (exit code, output)."""
    work = tmp_path_factory.mktemp("agl-cfg")
    procs = {name: subprocess.Popen([str(AGL_SERVER), "--cfg", "job", *argv], cwd=work,
                                    env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
             for name, (argv, _) in cases(conf_dir).items()}
    out = {}
    for name, proc in procs.items():
        text, _ = proc.communicate(timeout=60)
        out[name] = (proc.returncode, text)
    return out


@pytest.mark.parametrize("case", ["packaged", "overrides", "config dir extends server",
                                  "config path", "config path pkg"])
def test_composed_as_agl_server_composes(case: str, conf_dir: Path,
                                         agl_composed: dict[str, tuple[int, str]]) -> None:
    code, text = agl_composed[case]
    assert code == 0, text
    assert compose(cases(conf_dir)[case][1]) == yaml.safe_load(text)


@pytest.mark.parametrize("case", ["config path without server", "unknown key",
                                  "relative config path"])
def test_refused_as_agl_server_refuses(case: str, conf_dir: Path,
                                       agl_composed: dict[str, tuple[int, str]]) -> None:
    code, text = agl_composed[case]
    assert code == 1
    with pytest.raises(GatewayConfigError) as refused:
        compose(cases(conf_dir)[case][1])
    assert "\n" not in str(refused.value)
    assert str(refused.value).startswith(text.splitlines()[0].strip())


def test_the_packaged_fast_path_is_the_composed_config() -> None:
    """`server_config` (demo, live --gateway, collect --gateway) reads server.yaml directly; it
    must stay what Hydra composes from it."""
    from tractatus_watch.collectors.gateway_tap import server_config

    composed = compose(ConfigArgs())
    assert server_config(host=composed["host"], port=composed["port"],
                         key=composed["key"]) == composed


# --- the program ------------------------------------------------------------------------------

def tw_gateway(*args: str, log: Path | None = None, **extra_env: str) -> subprocess.Popen[str]:
    """The program; its stderr to `log` if given (a server's log must not fill a pipe)."""
    err: Any = subprocess.PIPE if log is None else open(log, "w")
    try:
        return subprocess.Popen([sys.executable, "-m", "tractatus_watch", "gateway", *args],
                                env=env(**extra_env), stdout=subprocess.PIPE if log is None
                                else subprocess.DEVNULL, stderr=err, text=True)
    finally:
        if log is not None:
            err.close()


# Fixed, not random: the test ids hold it, and every xdist worker must collect the same ids.
HIDDEN = "s3cr3t-70840d4c"
REFUSED = {
    "foo=1": "Could not override 'foo'. To append to your config use +foo=1",
    "port=abc": "port: expected a port number 0-65535, got 'abc'",
    "port=70000": "port: expected a port number 0-65535, got 70000",
    "port=true": "port: expected a port number 0-65535, got True",
    "port": "Error parsing override 'port' missing EQUAL at '<EOF>'",
    f"key=it's-{HIDDEN}": "LexerNoViableAltException: key=*** ^",
    "~default_proxy.model_name": "default_proxy: missing 'model_name'",
    "~default_proxy": "default_proxy: expected a mapping, got None",
    "default_proxy.train.temperature=hot":
        "default_proxy: Agent Lightning cannot use it: could not convert string to float: 'hot'",
    "key=${oc.env:TW_TEST_UNSET_VARIABLE}":
        "KeyError raised while resolving interpolation: \"Environment variable "
        "'TW_TEST_UNSET_VARIABLE' not found\" full_key: key object_type=dict",
}


@pytest.mark.parametrize("override", list(REFUSED))
def test_a_bad_override_is_one_line_without_the_key(override: str) -> None:
    from tractatus_watch.collectors.gateway_config import gateway_config

    with pytest.raises(GatewayConfigError) as refused:
        gateway_config(ConfigArgs((override,)))
    assert str(refused.value) == REFUSED[override]


def test_bad_arguments_exit_2_in_one_line(tmp_path: Path) -> None:
    store = str(tmp_path / "never.duckdb")
    bad = ["foo=1", "port=abc", f"key=it's-{HIDDEN}"]
    procs = {arg: tw_gateway("--store", store, arg) for arg in bad}
    procs["-cd"] = tw_gateway("--store", store, "-cd", str(tmp_path / "nope"))
    for arg, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, (arg, err)
        assert "Traceback" not in err and HIDDEN not in err and out == ""
        expected = (f"--config-dir: no such folder: {tmp_path}/nope" if arg == "-cd"
                    else REFUSED[arg])
        assert err.splitlines() == [f"error: gateway configuration: {expected}"], arg
    assert not Path(store).exists()  # refused before anything was opened


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def stop(proc: subprocess.Popen[str], log: Path) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return proc.returncode, log.read_text()


def test_an_override_wins_over_its_option_and_an_option_over_the_files(
        tmp_path: Path, conf_dir: Path, running: list[subprocess.Popen[str]]) -> None:
    env_key, cli_key = "env-" + secrets.token_hex(8), "cli-" + secrets.token_hex(8)
    option_port, override_port, file_port = free_port(), free_port(), free_port()
    # 1: `--port` and `port=`, $AGL_KEY and `key=`: the overrides win.
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    first = tw_gateway("--store", str(tmp_path / "a.duckdb"), "--port", str(option_port),
                       f"port={override_port}", f"key={cli_key}",
                       "default_proxy.model_name=override/model", log=logs[0], AGL_KEY=env_key)
    # 2: `--port` over the config file's port; the key from $AGL_KEY; the model from the file.
    second = tw_gateway("--store", str(tmp_path / "b.duckdb"), "-cd", str(conf_dir),
                        "-cn", "custom", "--port", str(file_port), log=logs[1],
                        AGL_KEY=env_key)
    running += [first, second]
    for proc, port, log in ((first, override_port, logs[0]), (second, file_port, logs[1])):
        wait_healthy(f"http://127.0.0.1:{port}", proc, log, 60)  # type: ignore[arg-type]

    with clients.client(timeout=10) as c:
        def get(port: int, key: str) -> int:
            return c.get(f"http://127.0.0.1:{port}/api/rollouts", params={"state_in": "queuing"},
                         headers={"x-api-key": key}).status_code

        def model_of(port: int, key: str) -> str:
            base, headers = f"http://127.0.0.1:{port}", {"x-api-key": key}
            c.post(f"{base}/api/rollouts", json=[{"input": {}, "rollout_id": "m"}],
                   headers=headers)
            return c.post(f"{base}/proxy/rollout/m/attempt/0/mode/train/openai/v1/"
                          "chat/completions", json={"messages": []},
                          headers=headers).json()["detail"]

        assert (get(override_port, cli_key), get(override_port, env_key)) == (200, 401)
        assert model_of(override_port, cli_key) == "No servers available for model " \
                                                   "'override/model'"
        assert (get(file_port, env_key), get(file_port, "wrong")) == (200, 401)
        assert model_of(file_port, env_key) == "No servers available for model " \
                                               "'custom/model-from-file'"
        with pytest.raises(httpx.TransportError):
            c.get(f"http://127.0.0.1:{option_port}/healthz")  # the option lost

    code, err = stop(first, logs[0])
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith(("note:", "warning:"))]
    assert notes == [
        f"note: port={override_port} on the command line wins over --port {option_port}",
        "warning: key= on the command line shows in `ps` and the shell's history; use "
        "$AGL_KEY or --key-file"]
    assert cli_key not in err and env_key not in err
    code, err = stop(second, logs[1])
    assert code == 0 and not [line for line in err.splitlines()
                              if line.startswith(("note:", "warning:"))], err
