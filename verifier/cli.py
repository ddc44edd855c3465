"""The one console script, ``rubric-verifier``, with a subcommand per stage.

Each subcommand lives in the module that owns the stage and exposes ``add_arguments(parser)`` and
``run(args) -> int``. Only the chosen subcommand's module is imported, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from rubric_pipeline.core.errors import RubricVerifierError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("verifier.models", "build the models the project makes (tiny random Qwen3, Gemma-3-270M)"),
    "build": ("rubric_pipeline.pipeline", "corpus + questions -> rubric dataset with provenance"),
    "respond": (
        "verifier.data.respond",
        "generate candidate responses for the questions from LLM endpoint(s)",
    ),
    "label": ("verifier.data.teacher", "label responses against rubrics with a judge (teacher labelling)"),
    "augment": ("verifier.data.augment", "add master-key adversarial negatives and rubric regrouping"),
    "train": (
        "verifier.train.cli",
        "train the verifier: `train sft` (stage 1), `train rl` (stage 2, GRPO), `train average` (a soup)",
    ),
    "serve": ("verifier.serve.cli", "serve a verifier: vLLM engine(s) behind the reward gateway"),
    "eval": ("verifier.eval.evaluate", "evaluate a judge: P/R/F1, nugget scores, master-key FPR"),
    "demo": ("verifier.demo", "run the whole toolkit on the embedded demo world"),
}

# Printed as one line and exit 2: the toolkit's own errors (bad records, bad options, a server that kept
# failing) and input the user named that cannot be read. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    RubricVerifierError,
    FileNotFoundError,
    IsADirectoryError,
    PermissionError,
)


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rubric-verifier",
        description="Rubric-based generative verifiers: rubric datasets, judge training, reward serving.",
    )
    # dest of its own: `train` stages have TRL's `--log_level` (the trainer's) under the same name
    parser.add_argument(
        "--log-level", dest="cli_log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:  # import only the module that will run
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if arg in COMMANDS), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=args.cli_log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args._module.run(args) or 0)
    except Exception as exc:
        if args.cli_log_level == "DEBUG" or not isinstance(exc, USER_ERRORS):
            raise  # a bug, or asked for the traceback
        print(f"rubric-verifier {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rubric-verifier {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
