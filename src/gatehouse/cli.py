"""The ``gatehouse`` command: a thin layer over the library.

Subcommands: ``run`` (serve), ``check`` (validate a config), ``check-policy`` (dry-run a
policy decision), ``keygen`` (a new signing key), ``reference`` (the config reference).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections.abc import Sequence

from . import __version__, build_kind
from .errors import ConfigError


def _cmd_run(args: argparse.Namespace) -> int:
    from .serve import load_or_exit, run

    if args.config is None:
        return _cmd_demo(args)
    return run(args.config, load_or_exit(args.config))


def _cmd_check(args: argparse.Namespace) -> int:
    from .config.loader import load_file
    from .proxy.state import build_state

    try:
        loaded = load_file(args.config)
        # Compile everything, but generate nothing: keys that would be created in
        # data_dir at run time go to a throwaway directory.
        with tempfile.TemporaryDirectory() as scratch:
            options = loaded.options.model_copy(update={"data_dir": scratch})
            build_state(dataclasses.replace(loaded, options=options))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {args.config}", file=sys.stderr)
        return 1
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    routes = len(loaded.options.all_routes)
    print(f"{args.config}: OK ({routes} route{'s' if routes != 1 else ''})")
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    from .identity.keys import keygen_text

    print(keygen_text())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo_config
    from .serve import run

    try:
        loaded, sock = demo_config()
    except OSError as exc:
        print(
            f"gatehouse demo: cannot listen: {exc.strerror or exc} (set ADDRESS=:PORT)",
            file=sys.stderr,
        )
        return 1
    return run(None, loaded, sock=sock)


def _cmd_reference(args: argparse.Namespace) -> int:
    from .config.reference import reference_markdown

    sys.stdout.write(reference_markdown())
    return 0


_PASSTHROUGH_HELP = {
    "check-policy": "show the policy decision for a URL and a user, without a server",
    "verify-app": "run the verify app: an upstream that shows and checks the forwarded assertion",
    "hash-password": "hash a password for idp_users (reads stdin or prompts)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatehouse",
        description="An identity-aware access proxy that speaks Pomerium's configuration.",
    )
    parser.add_argument(
        "--version", action="version", version=f"gatehouse {__version__} ({build_kind()})"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="serve until SIGINT/SIGTERM, then drain and exit")
    run.add_argument("-c", "--config", help="YAML config file (default: the built-in demo)")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check", help="validate a config file and report every problem")
    check.add_argument("-c", "--config", required=True, help="YAML config file")
    check.set_defaults(func=_cmd_check)

    keygen = sub.add_parser("keygen", help="print a new P-256 signing key (PEM and base64)")
    keygen.set_defaults(func=_cmd_keygen)

    demo = sub.add_parser(
        "demo", help="start the built-in single sign-on demo (same as run without -c)"
    )
    demo.set_defaults(func=_cmd_demo)

    # These parse their own arguments (see main); listed here for --help.
    for name, help_text in _PASSTHROUGH_HELP.items():
        sub.add_parser(name, help=help_text, add_help=False)

    ref = sub.add_parser("reference", help="print the configuration reference (Markdown)")
    ref.set_defaults(func=_cmd_reference)
    return parser


#: Subcommands that parse their own arguments (argparse's REMAINDER would swallow
#: their options at the top level): name -> (module, function taking argv).
_PASSTHROUGH = {
    "check-policy": ("authorize.dryrun", "main"),
    "verify-app": ("verify.app", "main"),
    "hash-password": ("idp.passwords", "hash_password_command"),
}


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in _PASSTHROUGH:
        import importlib

        module, func = _PASSTHROUGH[args_list[0]]
        entry = getattr(importlib.import_module(f"gatehouse.{module}"), func)
        code: int = entry(args_list[1:])
        return code
    parser = build_parser()
    args = parser.parse_args(args_list)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
