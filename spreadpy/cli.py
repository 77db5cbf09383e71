"""The `spreadpy` command: the daemon's command line, plus --check-config and --dump-config.

Flags follow the Spread 5.0.1 daemon (spread-daemon.md §1): `-n NAME` picks the configured
daemon by name instead of by local address, `-c FILE` names the configuration, `-l y|n` turns
the membership log on or off. Deviations: with `-c`, only that file is read (the original falls
back to ./spread.conf and the system file even when `-c` names a missing file); without `-c` the
search is spread.conf in the working directory, then /usr/local/etc/spread.conf (the stock
build's sysconfdir), then /etc/spread.conf. Options are parsed by argparse, not by their first
two characters, and a bad command line exits with status 2 rather than aborting.

`spreadpy --check-config` exits 0 after a one-line summary, or 1 after one `FILE:LINE:COL:
problem` line per error (on stderr). Warnings go to stderr as `FILE:LINE:COL: warning: ...`.
`spreadpy --dump-config` prints the parsed configuration as JSON.

Running without either flag starts the daemon (spreadpy/daemon.py). Our own flags:
`--state-dir DIR` (where the ring sequence number is kept across restarts) and
`--metrics-port PORT` (Prometheus counters on 127.0.0.1:PORT).

`spreadpy status [--json] [-c FILE] [-n NAME]` asks a running daemon for its ring, members,
clients, groups and counters over its status socket (`<client socket>.status`).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys

from spreadpy.config import (
    MAX_NAME_BYTES,
    HostEntry,
    IPAddress,
    SpreadConfig,
    config_to_dict,
    is_local_address,
    parse_config,
    select_own_host,
)
from spreadpy.errors import ConfigError

DEFAULT_CONFIG_SEARCH = ("spread.conf", "/usr/local/etc/spread.conf", "/etc/spread.conf")


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spreadpy",
        description="Spread 5.0.1 compatible group communication daemon.",
    )
    parser.add_argument(
        "-n",
        dest="name",
        metavar="NAME",
        help="run as the configured daemon NAME (default: the first daemon whose address "
        "is an address of this machine)",
    )
    parser.add_argument(
        "-c",
        dest="config",
        metavar="FILE",
        help="configuration file (default: the first of " + ", ".join(DEFAULT_CONFIG_SEARCH) + ")",
    )
    parser.add_argument(
        "-l",
        dest="membership_log",
        choices=("y", "n"),
        default="n",
        help="membership log on (y) or off (n, the default)",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep the ring sequence number here (default: RuntimeDir if writable, else "
        "~/.local/state/spreadpy)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on 127.0.0.1:PORT",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check-config",
        action="store_true",
        help="check the configuration, print a summary and exit (0: valid, 1: invalid)",
    )
    mode.add_argument(
        "--dump-config",
        action="store_true",
        help="print the parsed configuration as JSON and exit",
    )
    return parser


def find_config_file(explicit: str | None) -> str:
    """The file to read: `explicit` if given, else the first existing default."""
    if explicit is not None:
        return explicit
    for candidate in DEFAULT_CONFIG_SEARCH:
        try:
            with open(candidate, "rb"):
                return candidate
        except OSError:
            continue
    raise FileNotFoundError(
        "no configuration file found (tried " + ", ".join(DEFAULT_CONFIG_SEARCH) + ")"
    )


def load_config(path: str) -> SpreadConfig:
    """Read and parse `path`. Bytes that are not UTF-8 are kept (surrogateescape)."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "surrogateescape")
    return parse_config(text, path)


def gather_local_addresses() -> list[IPAddress]:
    """This machine's interface addresses (IPv4 and IPv6, loopback included), via netlink."""
    from pyroute2 import IPRoute  # imported here: only the CLI and the daemon need netlink

    found: list[IPAddress] = []
    try:
        with IPRoute() as ipr:
            for msg in ipr.get_addr():
                text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
                if text:
                    found.append(ipaddress.ip_address(text))
    except OSError:
        return []
    return found


def run_daemon(args: argparse.Namespace, config: SpreadConfig) -> int:
    """Select our host entry, then run the daemon until SIGINT or SIGTERM."""
    from spreadpy import daemon  # imported here: --check-config needs no event loop

    local = gather_local_addresses()
    try:
        me = select_own_host(config, args.name, local)
    except ConfigError as exc:
        _print_problems(exc)
        return 1
    daemon.configure_logging(config, me.name)
    # -l y: like the original, a membership log named after the daemon in the working directory.
    membership_log = f"{me.name}.log" if args.membership_log == "y" else None
    return daemon.main(
        config,
        me,
        state_dir=args.state_dir,
        metrics_port=args.metrics_port,
        membership_log=membership_log,
        local_addresses=local,
    )


def status_main(argv: list[str]) -> int:
    """`spreadpy status`: print a running daemon's status."""
    from spreadpy import daemon

    parser = argparse.ArgumentParser(prog="spreadpy status", description=status_main.__doc__)
    parser.add_argument("-c", dest="config", metavar="FILE")
    parser.add_argument("-n", dest="name", metavar="NAME")
    parser.add_argument("--socket", help="the status socket (default: derived from the config)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    path = args.socket
    if path is None:
        try:
            config = load_config(find_config_file(args.config))
            local = gather_local_addresses()
            me = select_own_host(config, args.name, local)
        except (OSError, ConfigError) as exc:
            print(f"spreadpy status: {exc}", file=sys.stderr)
            return 1
        path = daemon.default_paths(config, me, None, local).status_socket
    try:
        status = daemon.query_status(path)
    except OSError as exc:
        print(f"spreadpy status: no daemon answers on {path}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0
    ring = status["counters"]["ring"]
    print(f"daemon {status['daemon']}: {status['state']}, ring {status['ring_id']}")
    print(f"members: {' '.join(status['members'])}")
    print(f"clients: {status['clients']}, groups: {len(status['groups'])}")
    for group, members in sorted(status["groups"].items()):
        print(f"  {group}: {' '.join(members)}")
    print(
        f"packets sent {ring['packets_sent']} received {ring['packets_received']} "
        f"retransmitted {ring['retransmitted']} rotations {ring['rotations']} "
        f"delivered {ring['delivered']} bad {ring['bad_packets']}"
    )
    return 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summary_line(config: SpreadConfig, host: HostEntry | None, host_is_local: bool) -> str:
    """One line describing a valid configuration, for --check-config."""
    if host is None:
        me = "this daemon: none (no local address matches a daemon; use -n NAME)"
    else:
        local = "" if host_is_local else ", not an address of this machine"
        me = f"this daemon: {host.name} ({host.address} port {host.port}{local})"
    ring = "accelerated" if config.accelerated_ring else "original"
    t = config.timeouts
    return (
        f"{config.path}: OK: {_plural(len(config.segments), 'segment')}, "
        f"{_plural(len(config.hosts), 'daemon')}; {me}; ring: {ring}; "
        f"timeouts: {config.timeouts_source} (token {t.token_ms} ms); "
        f"hash {config.config_hash}"
    )


def check_config(args: argparse.Namespace, config: SpreadConfig) -> int:
    """--check-config on a parsed file: report which daemon this machine is, then exit 0.

    With -n the daemon need not be local (one admin host can check every daemon's view);
    an unknown name is an error (ConfigError).
    """
    local = gather_local_addresses()
    host: HostEntry | None
    if args.name is not None:
        host = select_own_host(config, args.name, local, allow_nonlocal=True)
    else:
        try:
            host = select_own_host(config, None, local)
        except ConfigError:
            host = None
    is_local = host is not None and is_local_address(host.address, local)
    print(summary_line(config, host, is_local))
    return 0


def _print_problems(error: ConfigError) -> None:
    for problem in error.problems:
        print(problem, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["status"]:
        return status_main(argv[1:])
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    if args.name is not None and len(args.name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        parser.error(f"-n: daemon name {args.name!r} is longer than {MAX_NAME_BYTES} bytes")
    try:
        path = find_config_file(args.config)
        config = load_config(path)
    except OSError as exc:
        print(f"spreadpy: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        _print_problems(exc)
        return 1
    for warning in config.warnings:
        print(
            f"{warning.path}:{warning.line}:{warning.col}: warning: {warning.message}",
            file=sys.stderr,
        )
    if args.dump_config:
        print(json.dumps(config_to_dict(config), indent=2))
        return 0
    if args.check_config:
        try:
            return check_config(args, config)
        except ConfigError as exc:
            _print_problems(exc)
            return 1
    return run_daemon(args, config)


if __name__ == "__main__":
    raise SystemExit(main())
