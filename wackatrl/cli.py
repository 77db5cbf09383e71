"""`wackatrl`: ask a running wackapy (or wackamole) over its control socket.

    wackatrl [-c FILE] (-l | -f | -s) [--json]

As upstream's wackatrl (shared/spec/wackamole.md §4.1): `-c FILE` names the configuration (the
socket path is its `Control` setting; without -c the first of /etc/wackamole.conf and
./wackamole.conf); `-l` lists who holds each VIP set; `-f` makes the daemon simulate a failure
(leave Spread, release everything) and `-s` ends the simulation; both print the table after.
The last of -l/-f/-s wins. No command prints the usage and exits 0, as upstream.

The listing is upstream's layout (control.format_listing): `Owner:` lines, `*` head lines and
`->` lines for a set's further addresses, but with the true prefix length (upstream printed /32
for a /24 on x86: a byte-order bug, spec §3.4). `--json` (ours) prints the daemon's state
document instead. Against a C wackamole, which does not know the JSON request, the original
binary table is read instead (no `--json` then).

Differences, on purpose: failures exit 1 (upstream always exits 0); a bad option exits 2 with
argparse's message (upstream: usage, exit 0); a configuration error is reported as by
`wackapy --check-config`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from spreadpy.errors import ConfigError
from wackapy.cli import DEFAULT_CONFIG_PATHS, _NoConfig, load_config
from wackapy.control import ControlError, Opcode, Unreachable, format_listing, read_state

EXIT_OK = 0
EXIT_FAILED = 1


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wackatrl",
        description="Query or control a running wackapy through its Control socket.",
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help=f"configuration file (default: the first of {', '.join(DEFAULT_CONFIG_PATHS)})",
    )
    parser.add_argument(
        "-l",
        dest="command",
        action="store_const",
        const="list",
        help="list the VIP sets and who holds them",
    )
    parser.add_argument(
        "-f",
        dest="command",
        action="store_const",
        const="fail",
        help="simulate a failure: the daemon leaves Spread and releases every address",
    )
    parser.add_argument(
        "-s",
        dest="command",
        action="store_const",
        const="succeed",
        help="end a simulated failure: the daemon reconnects",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the daemon's state document as JSON"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_arg_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0), bad options (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command is None:
        parser.print_usage(sys.stdout)
        return EXIT_OK
    path = _socket_path(args.config)
    if path is None:
        return EXIT_FAILED
    first = {"list": None, "fail": Opcode.SIMULATE_FAILURE, "succeed": Opcode.SIMULATE_SUCCESS}
    try:
        doc, rows = read_state(path, first=first[args.command])
    except Unreachable:
        print(f"connect to: {path} failed.")  # upstream's two lines, on stdout
        print("Perhaps wackamole is not running?")
        return EXIT_FAILED
    except ControlError as err:
        print(f"wackatrl: {err}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        if doc is None:
            print("wackatrl: the daemon does not answer JSON (not wackapy)", file=sys.stderr)
            return EXIT_FAILED
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        sys.stdout.write(format_listing(rows))
    return EXIT_OK


def _socket_path(config_path: str | None) -> str | None:
    """The Control path of the configuration; None (after a message) when there is none."""
    candidates = (config_path,) if config_path else DEFAULT_CONFIG_PATHS
    for candidate in candidates:
        try:
            config = load_config(candidate)
        except ConfigError as err:
            for p in err.problems:
                print(f"{p.path}:{p.line}:{p.col}: {p.message}", file=sys.stderr)
            return None
        except _NoConfig as err:  # cannot be read: try the next default location
            if config_path:
                print(f"wackatrl: {err}", file=sys.stderr)
                return None
            continue
        if not config.control_path:
            print(f"wackatrl: {candidate} sets no Control socket", file=sys.stderr)
            return None
        return config.control_path
    tried = ", ".join(candidates)
    print(f"wackatrl: no configuration file (tried {tried}); use -c FILE", file=sys.stderr)
    return None


if __name__ == "__main__":
    sys.exit(main())
