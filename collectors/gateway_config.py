"""The gateway's configuration, composed exactly as `agl-server` composes its own.

`agl-server` (Agent Lightning 1.0.2, `agentlightning/server/__main__.py`) is a Hydra app:
`@hydra.main(version_base=None, config_path="../config", config_name="server")` over the
packaged `agentlightning/config/server.yaml`. Its command line is Hydra's: `key=value`
overrides (also `+key=value`, `++key=value`, `~key`, `hydra.*`), `--config-path/-cp`,
`--config-dir/-cd` and `--config-name/-cn`. We hand the same arguments to Hydra itself: the
config search path is built by the function `hydra.main` uses, from agl-server's own module and
`config_path` (so a relative `-cp` means what it means to agl-server), `-cd` is added where
`hydra.main` adds it, and `hydra.compose` applies the overrides. Nothing here parses an override;
Hydra's errors become one line.

What we add, on top of what Hydra composed (`gateway_config`):
- `--host`/`--port`/the key from `--key-file` or `$AGL_KEY` fill in what the overrides did not set;
  an override given on the command line wins over the option for the same setting (a note
  says so). The key never goes through Hydra as text (a key with `,` or `'` is not an override).
- Without `host` from the command line we listen on 127.0.0.1, not the packaged 0.0.0.0.
- The composed values are checked before anything listens: host, port (a number 0-65535) and
  `default_proxy` (through Agent Lightning's own `ProxyRouter`, which agl-server would only
  build once it is serving).
- We never write Hydra's `outputs/` folder (agl-server's holds the composed config, key
  included, unless the key is an interpolation such as `${oc.env:AGL_KEY}`).

Hydra's pin (`hydra-core==1.3.2`, required by agentlightning 1.0.2) is what makes the two
`hydra._internal` names used here safe; `hydra.initialize_config_*` call the same ones.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

# agl-server's entry point and its @hydra.main arguments (agentlightning/server/__main__.py).
AGL_MAIN_MODULE: Final = "agentlightning.server.__main__"
AGL_CONFIG_PATH: Final = "../config"
AGL_CONFIG_NAME: Final = "server"

DEFAULT_HOST: Final = "127.0.0.1"
_KEY_OVERRIDE: Final = re.compile(r"^[+~]{0,2}key=(?P<value>.+)$")  # only to hide its value


class GatewayConfigError(ValueError):
    """A configuration agl-server would refuse (or crash on): one line, never the key."""


@dataclass(frozen=True)
class ConfigArgs:
    """agl-server's command-line arguments: Hydra overrides and its config-file options."""

    overrides: tuple[str, ...] = ()
    config_path: str | None = None
    config_dir: str | None = None
    config_name: str | None = None


@dataclass
class GatewayConfig:
    """The resolved server configuration for `create_app` (it holds the key: never print it)
    and the one-line notes the command line should show."""

    server: dict[str, Any] = field(repr=False)
    notes: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return str(self.server["host"])

    @property
    def port(self) -> int:
        return int(self.server["port"])

    @property
    def model_name(self) -> str:
        return str(self.server["default_proxy"]["model_name"])


def _one_line(exc: BaseException, secrets: Sequence[str]) -> str:
    """Hydra's multi-line messages as one line, without its documentation links, and without
    the value of a `key=` override (a parse error quotes the override it failed on)."""
    lines = [line.strip() for line in str(exc).splitlines()]
    text = " ".join(line for line in lines if line and not line.startswith("See https://"))
    for secret in secrets:
        text = text.replace(secret, "***")
    return text or type(exc).__name__


def _key_values(overrides: Sequence[str]) -> list[str]:
    return [m.group("value") for o in overrides if (m := _KEY_OVERRIDE.match(o))]


def compose(args: ConfigArgs) -> dict[str, Any]:
    """What `agl-server ARGS` would configure: Hydra's composition, resolved to plain values."""
    from hydra import compose as hydra_compose
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path, detect_task_name
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import validate_config_path
    from hydra.errors import HydraException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    secrets = _key_values(args.overrides)
    config_path = args.config_path if args.config_path is not None else AGL_CONFIG_PATH
    extra_dir = os.path.abspath(args.config_dir) if args.config_dir is not None else None
    if extra_dir is not None and not os.path.isdir(extra_dir):
        raise GatewayConfigError(f"--config-dir: no such folder: {extra_dir}")
    backup = get_gh_backup()  # Hydra's state is global: leave it as we found it
    GlobalHydra.instance().clear()
    try:
        version.setbase(None)  # as agl-server's @hydra.main(version_base=None)
        validate_config_path(config_path)
        search_path = create_automatic_config_search_path(None, AGL_MAIN_MODULE, config_path)
        if extra_dir is not None:  # where hydra.main puts --config-dir
            search_path.prepend(provider="command-line", path=f"file://{extra_dir}",
                                anchor=SearchPathQuery(provider="schema"))
        Hydra.create_main_hydra2(task_name=detect_task_name(None, AGL_MAIN_MODULE),
                                 config_search_path=search_path)
        cfg = hydra_compose(config_name=args.config_name or AGL_CONFIG_NAME,
                            overrides=list(args.overrides))
        plain = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise GatewayConfigError(_one_line(exc, secrets)) from None
    finally:
        restore_gh_from_backup(backup)
    if not isinstance(plain, dict):
        raise GatewayConfigError("the server configuration is not a mapping")
    return {str(k): v for k, v in plain.items()}


def _given(overrides: Sequence[str]) -> dict[str, Any]:
    """The settings the overrides name (Hydra's parser), each with its parsed value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides=list(overrides))
    return {o.key_or_group: o.value() for o in parsed}


def check(server: dict[str, Any]) -> None:
    """Refuse what agl-server could not serve, before anything listens."""
    from agentlightning.server.proxy import ProxyRouter

    host, port = server.get("host"), server.get("port")
    if not isinstance(host, str) or not host:
        raise GatewayConfigError(f"host: expected an address such as 127.0.0.1, got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise GatewayConfigError(f"port: expected a port number 0-65535, got {port!r}")
    if not isinstance(server.get("key"), (str, int, type(None))):
        raise GatewayConfigError("key: expected text")
    proxy = server.get("default_proxy")
    if not isinstance(proxy, dict):
        raise GatewayConfigError(f"default_proxy: expected a mapping, got {proxy!r}")
    try:
        ProxyRouter(proxy)
    except KeyError as exc:
        raise GatewayConfigError(f"default_proxy: missing {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise GatewayConfigError(f"default_proxy: Agent Lightning cannot use it: {exc}") from None


def gateway_config(args: ConfigArgs = ConfigArgs(), *, host: str | None = None,
                   port: int | None = None, key: str | None = None) -> GatewayConfig:
    """agl-server's configuration for ARGS, with our options filled in (see the module
    docstring for which wins), checked."""
    server = compose(args)  # first: a bad override is reported as Hydra words it
    given = _given(args.overrides)
    notes: list[str] = []
    for name, option, flag in (("host", host, "--host"), ("port", port, "--port")):
        if name in given:
            if option is not None and given[name] is not None and option != given[name]:
                notes.append(f"note: {name}={given[name]} on the command line wins over "
                             f"{flag} {option}")
        elif option is not None:
            server[name] = option
    if "host" not in given and host is None:
        server["host"] = DEFAULT_HOST
    if "key" in given:
        value = given["key"]
        if not (isinstance(value, str) and "${" in value):  # an interpolation is not the key
            notes.append("warning: key= on the command line shows in `ps` and the shell's "
                         "history; use $AGL_KEY or --key-file")
    elif key is not None:
        server["key"] = key
    check(server)
    return GatewayConfig(server=server, notes=notes)
