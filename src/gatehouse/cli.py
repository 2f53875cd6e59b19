"""The ``gatehouse`` command: a thin layer over the library.

Subcommands: ``run`` (serve), ``demo`` (the embedded single sign-on demo), ``check``
(validate a config as ``run`` would start it), ``check-policy`` (dry-run a policy decision),
``keygen`` (a new signing key), ``hash-password`` (for ``idp_users``), ``verify-app`` (an
upstream that checks the assertion), ``reference`` (the config reference).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__, build_kind
from .errors import ConfigError


def _cmd_run(args: argparse.Namespace) -> int:
    from .gcpause import start_up_without_collector
    from .serve import load_or_exit, run

    start_up_without_collector()  # the worker turns it on once it serves
    if args.config is None:
        return _cmd_demo(args)
    return run(args.config, load_or_exit(args.config))


def _cmd_check(args: argparse.Namespace) -> int:
    from .gcpause import exit_without_collection, start_up_without_collector

    start_up_without_collector()  # a short-lived command: what it builds lives to the end
    try:
        return _check(args)
    finally:
        exit_without_collection()


def _check(args: argparse.Namespace) -> int:
    from .config.loader import load_file
    from .preflight import startup_problems, store_warning

    try:
        loaded = load_file(args.config)
    except ConfigError as exc:
        return _report(exc.problems, args.config)
    problems = startup_problems(loaded, scratch_data_dir=True)
    if problems:
        return _report(problems, args.config)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    unreachable = store_warning(loaded.options)
    if unreachable is not None:
        print(f"warning: {unreachable}", file=sys.stderr)
    routes = len(loaded.options.all_routes)
    print(f"{args.config}: OK ({routes} route{'s' if routes != 1 else ''})")
    return 0


def _report(problems: list[str], source: str) -> int:
    for problem in problems:
        print(problem, file=sys.stderr)
    plural = "s" if len(problems) != 1 else ""
    print(f"{len(problems)} problem{plural} in {source}", file=sys.stderr)
    return 1


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

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=description)

    run = command(
        "run",
        "serve until SIGINT/SIGTERM, then drain and exit",
        "Serve a config: the file is reloaded when it changes and on SIGHUP; SIGTERM or "
        "SIGINT drain in-flight requests (at most shutdown_timeout), then exit 0. A config "
        "that cannot start is refused with every problem (as by check), exit 1.",
    )
    run.add_argument(
        "-c", "--config", help="YAML config file (default: the built-in single sign-on demo)"
    )
    run.set_defaults(func=_cmd_run)

    check = command(
        "check",
        "validate a config file and report every problem",
        "Validate a config as run would start it: keys and values, secret and key files, "
        "certificates, identity provider settings, routes and policies. Prints every "
        "problem with file:line, sorted; exit 0 when it can start, 1 when not.",
    )
    check.add_argument("-c", "--config", required=True, help="YAML config file")
    check.set_defaults(func=_cmd_check)

    keygen = command(
        "keygen",
        "print a new P-256 signing key (PEM and base64)",
        "Print a new ES256 (P-256) private key for signing_key / signing_key_file, as PEM "
        "and as the base64 that signing_key takes.",
    )
    keygen.set_defaults(func=_cmd_keygen)

    demo = command(
        "demo",
        "start the built-in single sign-on demo (same as run without -c)",
        "Start the embedded single sign-on demo: built-in identity provider, SQLite "
        "sessions, generated keys, on http://*.localhost:8080 (ADDRESS overrides; data in "
        "DATA_DIR, default ~/.local/share/gatehouse).",
    )
    demo.set_defaults(func=_cmd_demo)

    # These parse their own arguments (see main); listed here for --help.
    for name, help_text in _PASSTHROUGH_HELP.items():
        sub.add_parser(name, help=help_text, add_help=False)

    ref = command(
        "reference",
        "print the configuration reference (Markdown)",
        "Print the configuration reference, generated from the options model, as Markdown "
        "(docs/configuration.md is this output).",
    )
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
