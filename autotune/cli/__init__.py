"""autotune: measure the largest batch that trains and the DataLoader setting that keeps the GPU fed.

Commands: run (tune and write a profile, or check it), train (lerobot-train at the tuned settings,
watched), show, verify (in the real lerobot-train),
history, schedule (nightly), predict (another card), describe (the model)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from tqdm.contrib.logging import logging_redirect_tqdm

from autotune.cli import describe, estimate, fleet, history, predict, rl, run, schedule, show, train, verify
from autotune.cli.args import Parser
from autotune.errors import ProbeError, Terminated, UserError
from autotune.redact import redact_logs
from autotune.run.probe_client import stop_children

log = logging.getLogger("autotune")

# The subcommands in the order --help lists them: each module has add_parser(sub) and handle(args).
COMMANDS = {
    "run": run,
    "train": train,
    "show": show,
    "predict": predict,
    "verify": verify,
    "history": history,
    "schedule": schedule,
    "fleet": fleet,
    "describe": describe,
    "rl": rl,
    "estimate": estimate,
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="autotune", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only on stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def _terminated(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        format="[autotune] %(message)s",
        stream=sys.stderr,
    )
    redact_logs()  # every log record, of every library, with passwords masked
    signal.signal(signal.SIGTERM, _terminated)
    try:
        with logging_redirect_tqdm():
            return COMMANDS[args.command].handle(args)
    except UserError as exc:
        print(f"autotune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ProbeError as exc:
        print(f"autotune: probe failed: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        stop_children()  # any probe child a thread still waits on
        print("autotune: terminated; earlier results are intact", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        stop_children()
        print("autotune: interrupted; earlier results are intact", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (piped into head): not an error; silence the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
