"""Command line: thin functions over resolve / merge / verify; errors become one line and an exit code."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Callable

from packager import __version__
from packager.cli.artefact import add_artefact_commands, add_artefact_flags, add_gate_flags
from packager.cli.common import add_qlora_flags, add_task_flag, hash_base_ahead, parse_size, resolve_request
from packager.cli.merge import cmd_merge
from packager.cli.quiet import quiet_libraries
from packager.cli.sbom import add_sbom_command
from packager.cli.verify_image import add_verify_image_command
from packager.dtypes import CLI_CHOICES
from packager.errors import PackagerError, UserInputError

log = logging.getLogger("packager")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        """Raise argparse's usage errors as a one-line UserInputError (exit 2) instead of exiting here."""
        raise UserInputError(f"{message}; see `{self.prog} --help`")


def _add_input_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--adapter",
        required=True,
        metavar="PATH",
        help="PEFT adapter folder, or a training output folder with checkpoint-N/ subfolders",
    )
    p.add_argument(
        "--base", metavar="PATH|HUB_ID", help="base model; default: base_model_name_or_path from the adapter config"
    )
    p.add_argument("--revision", help="hub revision of the base (default: the adapter config's, else main)")
    p.add_argument(
        "--checkpoint", type=int, metavar="N", help="use checkpoint-N (a LitGPT run: step-N) instead of the newest"
    )
    p.add_argument(
        "--dtype",
        default="auto",
        choices=CLI_CHOICES,
        help="dtype of the merged weights (default auto: keep the base's)",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="accept .bin/.pt weights (loaded with torch weights_only=True); refused by default",
    )
    p.add_argument(
        "--engine",
        default="auto",
        choices=["auto", "stream", "peft"],
        help="merge engine: stream (low memory, LoRA), peft (merge_and_unload); default auto: the plan picks",
    )
    add_qlora_flags(p)
    add_task_flag(p)
    p.add_argument("--json", action="store_true", help="print a JSON report on stdout instead of a summary")


def build_parser() -> argparse.ArgumentParser:
    """The `packager` argument parser with every subcommand."""
    parser = _Parser(
        prog="packager",
        description=(
            "Turn a fine-tuned LLM adapter into a servable model: resolve and pin its base, check that they fit, "
            "merge with low memory and verify parity with PEFT."
        ),
    )
    parser.add_argument("--version", action="version", version=f"packager {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    common = argparse.ArgumentParser(add_help=False)  # the global flags also work after the command
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress output")

    p = sub.add_parser(
        "resolve", parents=[common], help="find the base, pin every file by sha256, check the adapter fits"
    )
    _add_input_flags(p)
    p.add_argument("--lock", default="packager.lock.json", metavar="FILE",
                   help="where to write the lock file (default packager.lock.json)")  # fmt: skip
    p.set_defaults(func=_cmd_resolve)

    p = sub.add_parser("merge", parents=[common], help="merge the adapter into its base, streaming tensor by tensor")
    _add_input_flags(p)
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the merged model (must not exist)")
    add_artefact_flags(p)
    p.add_argument(
        "--artefact-output",
        metavar="DIR",
        help="with --export onnx: where the ONNX artefact goes (default: OUTPUT-onnx-fp32, or OUTPUT-onnx-int8 with "
        "--quantize int8); the merged model stays in --output (a --quantize w8a8|w8a16|w4a16|fp8 checkpoint is "
        "--output itself)",
    )
    p.add_argument("--force", action="store_true", help="replace --output if it exists")
    p.add_argument("--no-verify", action="store_true", help="skip the logits parity check against PEFT")
    p.add_argument(
        "--verify-max-gb",
        type=float,
        default=8.0,
        help="skip parity for bases larger than this (it loads the model twice); default 8",
    )
    p.add_argument(
        "--max-shard-size", type=parse_size, default="5GB", metavar="SIZE", help="output shard size (default 5GB)"
    )
    p.add_argument("--dry-run", action="store_true", help="resolve and check, print the plan, write nothing")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("verify", parents=[common], help="compare logits of base+adapter (PEFT) with a merged model")
    _add_input_flags(p)
    p.add_argument("--merged", required=True, metavar="DIR", help="the merged model folder")
    add_gate_flags(p)  # a quantized merge is held to the accuracy gate instead of exact parity
    p.set_defaults(func=_cmd_verify)

    from packager.cli.base_image import add_base_image_command
    from packager.cli.container import add_container_commands
    from packager.cli.runtime_image import add_runtime_image_command

    add_container_commands(sub, common)
    add_base_image_command(sub, common)
    add_runtime_image_command(sub, common)
    add_artefact_commands(sub, common)
    add_sbom_command(sub, common)
    add_verify_image_command(sub, common)

    p = sub.add_parser(
        "demo", parents=[common], help="generate a tiny demo base model and LoRA adapter (no hub needed)"
    )
    p.add_argument("--output", default="demo", metavar="DIR", help="where to write base/ and adapter/ (default demo)")
    p.set_defaults(func=_cmd_demo)
    return parser


def _cmd_resolve(args: argparse.Namespace) -> int:
    hash_base_ahead(args.adapter, args.base, args.checkpoint)
    from packager.cli.report import print_plan
    from packager.resolve.resolver import resolve, write_lock

    resolved = resolve(resolve_request(args))
    write_lock(resolved.plan, args.lock)
    if args.json:
        print(json.dumps(resolved.plan.to_dict(), indent=2, default=str))
    else:
        print_plan(resolved.plan, args.lock)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from packager.merge.verify import measure_parity
    from packager.quantize.folder import scheme_of
    from packager.resolve.resolver import resolve

    if not os.path.isfile(os.path.join(args.merged, "config.json")):
        raise UserInputError(f"{args.merged} is not a model folder (no config.json); pass the merge --output folder")
    resolved = resolve(resolve_request(args, hash_base=False))
    scheme = scheme_of(args.merged)
    if scheme is not None:
        return _verify_quantized(args, resolved, scheme)
    report = measure_parity(resolved, args.merged)
    print(json.dumps(report.__dict__, indent=2) if args.json else report.summary())
    return 0 if report.passed else 1


def _verify_quantized(args: argparse.Namespace, resolved, scheme: str) -> int:
    """A quantized merge cannot match PEFT's logits exactly: it is measured against the unquantized merge on the
    shipped text, as `merge --quantize` was, and held to the accuracy gate."""
    from packager.accuracy.gate import failed_figure
    from packager.cli.artefact import gate_from_args
    from packager.merge.merged_source import measure_quantized_merge

    gate = gate_from_args(args)
    report = measure_quantized_merge(resolved, args.merged, scheme)
    failed = failed_figure(report, gate)
    verdict = "ok" if failed is None else f"FAILED: it {failed[0]} from {failed[1]})"
    if args.json:
        print(json.dumps({"scheme": scheme, "accuracy": report.to_dict(), "gate": gate.__dict__,
                          "passed": failed is None}, indent=2))  # fmt: skip
    else:
        print(f"quantized merge ({scheme}, compressed-tensors): measured against the unquantized base + adapter on "
              f"the shipped text, not for exact logits parity: {report.summary()}")  # fmt: skip
        print(f"accuracy {verdict} (limits: {gate.describe()})")
    return 0 if failed is None else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from packager.demo import build_demo

    base, adapter = build_demo(args.output)
    print(f"demo base: {base}\ndemo adapter: {adapter}")
    return 0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None, run: Callable[[argparse.Namespace], int] | None = None) -> int:
    """Entry point: parse, run, and turn every failure into `error: …` on stderr plus an exit code."""
    args = None
    try:
        args = build_parser().parse_args(argv)
        quiet_libraries(args.debug)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        return (run or args.func)(args)
    except PackagerError as exc:
        _print_error(exc, args, exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:
        _print_error(
            exc,
            args,
            f"unexpected {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            f"; rerun with --debug and report it",
        )
        return 1
    finally:
        from packager.io.hashing import stop_hashing_ahead

        stop_hashing_ahead()


def _print_error(exc: BaseException, args: argparse.Namespace | None, message: str) -> None:
    if args is not None and getattr(args, "debug", False):
        import traceback

        traceback.print_exception(exc)
    print(f"error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())


def main_entry() -> None:
    """Console-script entry point."""
    code = main()
    # With torch loaded, the interpreter's last garbage collection at exit scans every object torch created
    # (~0.2 s); the work is done, so mark everything permanent and let exit skip that scan.
    gc.freeze()
    sys.exit(code)
