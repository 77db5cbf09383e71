"""`wackapy` command line: wackamole's options, plus --check-config and --dump-config.

Options follow upstream wackamole (shared/spec/wackamole.md §5.1): -c FILE, -d, -s SPREAD,
-u USER, -v. Differences, on purpose: `-s` overrides the file's `Spread` (upstream: the file
wins, which leaves -s useless); a `-c` file that cannot be read is an error (upstream: silent
fallback to the default locations); bad options exit 2 with argparse's message (upstream:
usage, exit 0); options are matched exactly (upstream: on their first two characters).
Without --check-config or --dump-config the daemon runs in the foreground (no fork, no PID
file; -d only selects debug logging to stdout): see wackapy/daemon.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import TextIO

from spreadpy.errors import ConfigError, ConfigProblem

from .config import WackamoleConfig, config_to_dict, format_seconds, parse_config, parse_spread

# Searched in order when no -c is given (upstream: <sysconfdir>/wackamole.conf, then ./).
DEFAULT_CONFIG_PATHS = ("/etc/wackamole.conf", "wackamole.conf")
CONFIG_BYTES_MAX = 1 << 20  # a wackamole.conf is a few kB; refuse to read a stray huge file
PRIVATE_NAME_LEN_MAX = 10  # Spread MAX_PRIVATE_NAME


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wackapy",
        description="Wackamole-compatible virtual IP failover over Spread.",
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help=f"configuration file (default: the first of {', '.join(DEFAULT_CONFIG_PATHS)})",
    )
    parser.add_argument(
        "-d",
        "--debug",
        action="store_true",
        help="log debug messages to stdout (wackapy always stays in the foreground and "
        "writes no PID file; without -d it logs to syslog)",
    )
    parser.add_argument(
        "-s",
        "--spread",
        metavar="PORT[@HOST]|PATH",
        type=_spread_arg,
        help="Spread daemon to connect to (a port, port@host, or a Unix socket path); "
        "overrides the file's Spread setting",
    )
    parser.add_argument(
        "-u",
        "--user",
        metavar="NAME",
        type=_private_name_arg,
        help="Spread private name (default: wack<pid>)",
    )
    parser.add_argument("-v", "--version", action="store_true", help="print the version and exit")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check-config",
        action="store_true",
        help="check the configuration, print a one-line summary, and exit (1 on errors)",
    )
    mode.add_argument(
        "--dump-config",
        action="store_true",
        help="print the configuration, with every default filled in, as JSON and exit",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_arg_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help (0) and on bad options (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.version:
        print(f"wackapy {_version()}")
        return 0
    try:
        path = args.config or _find_config(DEFAULT_CONFIG_PATHS)
        config = load_config(path)
    except _NoConfig as err:
        print(f"wackapy: {err}", file=sys.stderr)
        return 1
    except ConfigError as err:
        _print_problems(err.problems, "", sys.stderr)
        return 1
    _print_problems(config.warnings, "warning: ", sys.stderr)
    if args.spread is not None:
        config = dataclasses.replace(config, spread=args.spread)
    if args.check_config:
        print(f"{path}: OK: {summarize(config)}")
        return 0
    if args.dump_config:
        print(json.dumps(config_to_dict(config), indent=2))
        return 0
    return run_daemon(args, config)


def run_daemon(args: argparse.Namespace, config: WackamoleConfig) -> int:
    """Run the wackapy daemon in the foreground until SIGTERM or SIGINT (wackapy/daemon.py)."""
    from .daemon import main as daemon_main  # the daemon's imports (scapy...) only when needed

    return daemon_main(config, private_name=args.user, debug=args.debug)


def load_config(path: str) -> WackamoleConfig:
    """Read and parse `path`; raise ConfigError (also for bad UTF-8) or _NoConfig."""
    try:
        with open(path, "rb") as file:
            data = file.read(CONFIG_BYTES_MAX + 1)
    except OSError as err:
        raise _NoConfig(f"cannot read {path}: {err.strerror or err}") from None
    if len(data) > CONFIG_BYTES_MAX:
        raise _NoConfig(f"{path} is larger than {CONFIG_BYTES_MAX} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        line = data.count(b"\n", 0, err.start) + 1
        col = len(data[line_start : err.start].decode("utf-8", "replace")) + 1
        raise ConfigError([ConfigProblem(path, line, col, "not valid UTF-8")]) from None
    return parse_config(text, path)


def summarize(config: WackamoleConfig) -> str:
    """One line: group, Spread, VIF sets, addresses, notify entries, maturity, balance."""
    per_round = config.balance.acquisitions_per_round
    return ", ".join(
        (
            f"group {config.group}",
            f"spread {config.spread}",
            f"{_count(len(config.vifs), 'VIF set')} "
            f"with {_count(len(config.addresses), 'address', 'addresses')}",
            _count(len(config.notify), "notify entry", "notify entries"),
            f"mature after {format_seconds(config.mature_s)}",
            f"balance {'all' if per_round is None else per_round} per round "
            f"every {format_seconds(config.balance.interval_s)}",
        )
    )


class _NoConfig(Exception):
    """No configuration file could be read (not a problem inside one)."""


def _find_config(candidates: Sequence[str]) -> str:
    for candidate in candidates:
        try:
            with open(candidate, "rb"):
                return candidate
        except OSError:
            continue
    raise _NoConfig(f"no configuration file (tried {', '.join(candidates)}); use -c FILE")


def _print_problems(problems: Sequence[ConfigProblem], label: str, out: TextIO) -> None:
    for p in problems:
        print(f"{p.path}:{p.line}:{p.col}: {label}{p.message}", file=out)


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _spread_arg(text: str) -> str:
    try:
        return parse_spread(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _private_name_arg(text: str) -> str:
    if not 1 <= len(text) <= PRIVATE_NAME_LEN_MAX or not all("$" <= c <= "~" for c in text):
        raise argparse.ArgumentTypeError(
            f"private name must be 1-{PRIVATE_NAME_LEN_MAX} characters from '$'..'~'"
        )
    return text


def _version() -> str:
    try:
        return metadata.version("spreadpy")
    except metadata.PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
