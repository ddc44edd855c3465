"""Run OpenRLHF's own code against a live gateway; run in the OpenRLHF environment (.venv-openrlhf).

    python openrlhf_driver.py parse --example examples/openrlhf.sh [EXTRA FLAGS...]
    python openrlhf_driver.py rewards --url URL/get_reward --model TINY_DIR [--concurrent N]

``parse``: the argument parser of the released ``openrlhf/cli/train_ppo_ray.py`` (the statements of its
``__main__`` block up to ``parse_args``, run as written; the module's own imports start Ray and DeepSpeed)
on the example's flags, then OpenRLHF's ``hierarchize``. ``rewards``: ``SingleTurnAgentExecutor.execute``
(its tokenization, prompt truncation, decode with special tokens kept and ``_fetch_rewards_via_http``)
with the tiny model's tokenizer; the policy's generation is a test double (:class:`FixedPolicy`) that
returns a chosen answer's tokens, since OpenRLHF's vLLM engine is a CUDA Ray actor. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

QUESTION = "Which river flows through Varn?"
RUBRICS = ["Names the Sella river.", {"text": "Gives a year.", "importance": "okay"}, "Mentions a surveyor."]


def released_parser() -> argparse.ArgumentParser:
    import openrlhf.cli

    source = (Path(openrlhf.cli.__file__).parent / "train_ppo_ray.py").read_text()
    main = next(
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
    )
    body = []
    for statement in main.body:
        if "parse_args" in ast.unparse(statement):
            break
        body.append(statement)
    namespace = {"argparse": argparse, "os": os, "datetime": datetime}
    exec(compile(ast.Module(body=body, type_ignores=[]), "train_ppo_ray.py", "exec"), namespace)
    return namespace["parser"]


def example_flags(example: Path) -> list[str]:
    text = example.read_text().replace("\\\n", " ")
    command = next(line for line in text.splitlines() if "openrlhf.cli.train_ppo_ray" in line)
    words = shlex.split(command)
    return [w for w in words[words.index("openrlhf.cli.train_ppo_ray") + 1 :] if w != "$@"]


def parse(example: str, extra: list[str]) -> dict:
    from openrlhf.utils.config import hierarchize

    args = hierarchize(released_parser().parse_args([*example_flags(Path(example)), *extra]))
    return {
        "remote_url": args.reward.remote_url,
        "label_key": args.data.label_key,
        "input_key": args.data.input_key,
        "apply_chat_template": args.data.apply_chat_template,
    }


class FixedPolicy:
    """Test double for OpenRLHF's vLLM engine: answers each prompt with the tokens of a chosen text."""

    def __init__(self, tokenizer, answer: str):
        self.token_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        output = SimpleNamespace(token_ids=list(self.token_ids), finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[output])


async def rewards(url: str, model: str, concurrent: int) -> dict:
    from openrlhf.utils.agent import SingleTurnAgentExecutor
    from transformers import AutoTokenizer

    from verifier.integrations.openrlhf import rubrics_label

    tokenizer = AutoTokenizer.from_pretrained(model)
    executor = SingleTurnAgentExecutor(remote_rm_url=[url])
    chat = [{"role": "user", "content": QUESTION}]
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    long_chat = [
        {"role": "user", "content": "Background: " + "the city of Varn lies on a river. " * 12 + QUESTION}
    ]
    long_prompt = tokenizer.apply_chat_template(long_chat, tokenize=False, add_generation_prompt=True)
    label = rubrics_label(RUBRICS, question=QUESTION)
    params = SimpleNamespace(max_tokens=16, logprobs=None)
    n_long = len(tokenizer(long_prompt, add_special_tokens=False)["input_ids"])
    cases = {
        "answer": (prompt, label, 1024, "The Sella river, mapped in 1821."),
        # max_len leaves 12 prompt tokens: OpenRLHF cuts the prompt from the left
        "truncated_degenerate": (long_prompt, label, 12 + params.max_tokens, "..."),
        "truncated_answer": (long_prompt, label, 12 + params.max_tokens, "The Sella river."),
        "no_rubrics": (prompt, "[]", 1024, "The Sella."),
    }

    async def run(case):
        prompt_text, label_text, max_length, answer = case
        policy = FixedPolicy(tokenizer, answer)
        output = await executor.execute(prompt_text, label_text, params, max_length, tokenizer, policy)
        return {"reward": output["reward"], "scores": output["scores"], "extra_logs": output["extra_logs"]}

    results = {name: await run(case) for name, case in cases.items()}
    burst = await asyncio.gather(*(run(cases["answer"]) for _ in range(concurrent)))
    return {"cases": results, "burst": burst, "long_prompt_tokens": n_long}


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("parse")
    p.add_argument("--example", required=True)
    r = sub.add_parser("rewards")
    r.add_argument("--url", required=True)
    r.add_argument("--model", required=True)
    r.add_argument("--concurrent", type=int, default=0)
    args, extra = parser.parse_known_args()
    if args.command == "parse":
        out = parse(args.example, extra)
    else:
        out = asyncio.run(rewards(args.url, args.model, args.concurrent))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
