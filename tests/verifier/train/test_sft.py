"""Stage 1 on the tiny model with the real TRL SFTTrainer: steps, merge, resume, served by real vLLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rubric_pipeline.core.records import write_jsonl


@pytest.fixture(scope="module")
def labelled_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rubric_pipeline.demo_world import generate_world, make_responses

    examples = make_responses(generate_world(seed=0), seed=0)[:40]
    path = tmp_path_factory.mktemp("data") / "labelled.jsonl"
    write_jsonl(path, (example.to_dict() for example in examples))
    return path


def _config(model_dir: Path, data: Path, out: Path, **overrides):
    from verifier.train.sft import sft_config

    values = dict(
        model_name_or_path=str(model_dir),
        data=str(data),
        output_dir=str(out),
        window_min=1,
        window_max=3,
        max_train_windows=16,
        max_eval_windows=4,
        per_device_train_batch_size=4,
        max_steps=4,
        learning_rate=5e-3,
        lora_r=4,
        lora_alpha=8,
        logging_steps=1,
        eval_max_new_tokens=16,
        max_length=1024,
    )
    return sft_config(**(values | overrides))


def _weights(model_dir: Path):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_sft_steps_learn_and_merge(tiny_model_dir: Path, labelled_path: Path, tmp_path: Path) -> None:
    import torch

    from verifier.train.sft import run_sft

    result = run_sft(
        _config(tiny_model_dir, labelled_path, tmp_path / "sft", use_peft=False, learning_rate=3e-3)
    )
    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    assert result.global_step == 4 and len(losses) == 4
    assert losses[-1] < losses[0]
    # the completion-only path logs TRL's token metrics (through the trainer's public ``log``)
    logged = [entry for entry in result.log_history if "loss" in entry]
    assert all({"entropy", "mean_token_accuracy", "num_tokens"} <= entry.keys() for entry in logged)
    assert 0 < logged[0]["num_tokens"] < logged[-1]["num_tokens"]
    merged = Path(result.model_dir)
    assert (merged / "config.json").is_file() and (merged / "tokenizer.json").is_file()
    before, after = _weights(tiny_model_dir), _weights(merged)
    assert any(not torch.equal(before[name], after[name]) for name in before if name in after)
    # the held-out agreement eval ran at the end and was logged
    assert result.agreement is not None and result.agreement["eval_prompts"] == 4
    assert 0.0 <= result.agreement["label_agreement"] <= 1.0
    lines = (tmp_path / "sft" / "agreement.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 4


def test_a_spent_training_budget_stops_the_stage_and_still_saves(
    tiny_model_dir: Path, labelled_path: Path, tmp_path: Path
) -> None:
    from verifier.train.sft import run_sft

    result = run_sft(
        _config(tiny_model_dir, labelled_path, tmp_path / "sft", max_train_seconds=0.0, max_eval_windows=0)
    )
    assert result.global_step == 1 and result.steps_run == 1  # of max_steps=4
    assert (Path(result.model_dir) / "model.safetensors").is_file()


def test_sft_lora_resume_continues_at_the_checkpoint_step(
    tiny_model_dir: Path, labelled_path: Path, tmp_path: Path
) -> None:
    from verifier.train.sft import run_sft

    out = tmp_path / "sft"
    first = run_sft(
        _config(tiny_model_dir, labelled_path, out, save_steps=2, merge=False, max_eval_windows=0)
    )
    assert (out / "checkpoint-2").is_dir() and (out / "checkpoint-4").is_dir()
    assert (out / "final" / "adapter_config.json").is_file()
    resumed = run_sft(
        _config(
            tiny_model_dir, labelled_path, out, save_steps=2, max_steps=6, resume_from_checkpoint="latest",
            max_eval_windows=0,
        )
    )  # fmt: skip
    assert first.global_step == 4
    assert resumed.global_step == 6 and resumed.steps_run == 2  # steps 5 and 6 only
    steps = [entry["step"] for entry in resumed.log_history if "loss" in entry]
    assert steps[-2:] == [5, 6]
    assert (Path(resumed.model_dir) / "model.safetensors").is_file()  # LoRA merged into a plain model


@pytest.mark.vllm
async def test_merged_model_is_served_by_vllm_and_answers_the_contract(
    tiny_model_dir: Path, labelled_path: Path, tmp_path: Path
) -> None:
    from rubric_pipeline.core.llm import LLMClient, LLMConfig
    from rubric_pipeline.core.records import Rubric
    from verifier.judge.hints import model_hints
    from verifier.judge.judges import LLMJudge
    from verifier.serve.engine import EngineConfig, VLLMEngine
    from verifier.train.sft import run_sft

    result = run_sft(
        _config(
            tiny_model_dir, labelled_path, tmp_path / "sft", max_steps=2, max_eval_windows=0, hints="evidence"
        )
    )
    assert (
        model_hints(result.model_dir) == "evidence"
    )  # the prompt card: serving renders the prompt it trained on
    engine = VLLMEngine(
        EngineConfig(model=result.model_dir, max_model_len=2048, log_path=str(tmp_path / "v.log"))
    )
    rubrics = [Rubric(rubric_id=f"r{i}", text=f"The response names fact {i}.") for i in range(3)]
    with engine:
        config = LLMConfig(base_urls=[engine.base_url], model=engine.model_name, max_retries=0)
        async with LLMClient(config) as client:
            judge = LLMJudge(client, max_tokens=32, hints=model_hints(result.model_dir))
            judgement = await judge.judge("Which facts?", "Fact 1 and fact 2.", rubrics)
    assert judgement.error is None, judgement.error
    assert len(judgement.labels) == 3 and set(judgement.labels) <= {
        "support",
        "partial_support",
        "not_support",
    }


@pytest.mark.parametrize("output_format", ["json", "yaml", "csv", "numbered", "comma", "xml"])
def test_teacher_forced_accuracy_matches_full_logits(
    tiny_model_dir: Path, labelled_path: Path, output_format: str
) -> None:
    """The cheap monitor picks, per label, the same answer as the full model's logits at that position,
    in formats where labels open a token (json, xml, csv) and where they follow a space (yaml, comma)."""
    import torch

    from rubric_pipeline.core.records import Label
    from verifier.train.data import WindowOptions, make_windows, read_labelled
    from verifier.train.sft import teacher_forced_label_accuracy
    from verifier.train.stage import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir), "float32")
    options = WindowOptions(window_min=2, window_max=4, output_formats=(output_format,))
    windows = make_windows(read_labelled(labelled_path)[:4], options)
    result = teacher_forced_label_accuracy(model, tokenizer, windows)
    assert result["eval_prompts"] == len(windows) and result["skipped_prompts"] == 0

    labels = [label.value for label in Label]
    correct = total = 0
    for (
        window
    ) in windows:  # reference: the full model forward, each label found by tokenizing what precedes it
        target = window.target()
        conversation = [*window.messages(), {"role": "assistant", "content": target}]
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
        base = text.rindex(target)
        ids = tokenizer(text, add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        cursor = 0
        for gold in window.labels:
            cursor = target.index(gold, cursor)
            for prefix in ("", " "):
                before = text[: base + cursor - len(prefix)]
                position = len(tokenizer(before, add_special_tokens=False).input_ids)
                candidates = [
                    tokenizer.encode(prefix + label, add_special_tokens=False)[0] for label in labels
                ]
                if ids[position] == candidates[labels.index(gold)]:
                    break
            else:
                pytest.fail(f"label {gold!r} not found on a token boundary in {output_format}")
            correct += labels[int(logits[position - 1, candidates].argmax())] == gold
            total += 1
            cursor += len(gold)
    assert result["teacher_forced_label_accuracy"] == pytest.approx(correct / total)
    assert sum(result["predicted"].values()) == total
    assert 0.0 <= result["teacher_forced_macro_f1"] <= 1.0


@pytest.mark.parametrize("eval_mode", ["generate", "teacher_forced"])
def test_train_sft_command_reports_the_held_out_eval(
    tiny_model_dir: Path,
    labelled_path: Path,
    tmp_path: Path,
    eval_mode: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`rubric-verifier train sft` runs and prints the held-out figure of either eval mode."""
    from verifier.cli import main

    recipe = Path(__file__).resolve().parents[3] / "recipes" / "tiny-cpu.yaml"
    argv = [
        "train",
        "sft",
        "--recipe",
        str(recipe),
        "--model",
        str(tiny_model_dir),
        "--data",
        str(labelled_path),
    ]
    argv += ["--output-dir", str(tmp_path / "sft"), "--max-steps", "1", "--eval-mode", eval_mode]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    expected = (
        "held-out label agreement" if eval_mode == "generate" else "held-out teacher forced label accuracy"
    )
    assert expected in printed, printed
    lines = (tmp_path / "sft" / "agreement.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["step"] == 1
    assert json.loads(lines[0])["train_seconds"] > 0  # a time-to-quality point: training time, eval left out


@pytest.mark.parametrize(("use_peft", "bf16", "loaded"), [(True, True, "bfloat16"), (True, False, "float32"),
                                                          (False, True, "float32")])  # fmt: skip
def test_a_frozen_lora_base_is_loaded_in_bf16_only_under_bf16_autocast(
    tiny_model_dir: Path, labelled_path: Path, tmp_path: Path, use_peft: bool, bf16: bool, loaded: str
) -> None:
    import torch

    from verifier.train.stage import prepare_stage

    config = _config(tiny_model_dir, labelled_path, tmp_path, use_peft=use_peft, bf16=bf16, use_cpu=True,
                     dtype="float32")  # fmt: skip
    _, model, _ = prepare_stage(config, "sft")
    assert model.dtype == getattr(torch, loaded)  # full fine-tuning keeps fp32 master weights


def test_full_fine_tuning_of_some_layers_leaves_the_rest_untouched(
    tiny_model_dir: Path, labelled_path: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from verifier.train.sft import run_sft

    config = _config(
        tiny_model_dir,
        labelled_path,
        tmp_path / "sft",
        use_peft=False,
        dtype="bfloat16",
        trainable_modules=r"model\.layers\.1\..*",
        learning_rate=3e-3,
        eval_steps=2,  # held-out evaluations run on the mixed-dtype model, as training does
        eval_mode="teacher_forced",
    )
    result = run_sft(config)
    assert result.global_step == 4 and result.agreement is not None
    before, after = _weights(tiny_model_dir), _weights(Path(result.model_dir))
    trained = {name for name in before if name.startswith("model.layers.1.")}
    for name in before.keys() - trained:  # frozen: the checkpoint's values, in the dtype they were loaded in
        assert torch.equal(after[name], before[name].to(torch.bfloat16)), name
    assert any(not torch.equal(after[name].float(), before[name]) for name in trained)
    assert {tensor.dtype for tensor in after.values()} == {torch.bfloat16}  # written in the loaded dtype
    AutoModelForCausalLM.from_pretrained(result.model_dir)


def test_trainable_modules_refuses_lora_and_a_pattern_that_matches_nothing(
    tiny_model_dir: Path, labelled_path: Path, tmp_path: Path
) -> None:
    from rubric_pipeline.core.errors import ConfigError
    from verifier.train.sft import run_sft

    with pytest.raises(ConfigError, match="use_peft false"):
        run_sft(_config(tiny_model_dir, labelled_path, tmp_path / "a", trainable_modules=".*layers.*"))
    with pytest.raises(ConfigError, match="matches no parameter"):
        run_sft(
            _config(
                tiny_model_dir, labelled_path, tmp_path / "b", use_peft=False, trainable_modules="nothing"
            )
        )


def test_average_tail_saves_the_mean_of_the_last_steps_weights(
    tiny_model_dir: Path, labelled_path: Path, tmp_path: Path
) -> None:
    """With average_tail 0.5 over 4 steps, the saved model is the mean of the weights after steps 3 and 4
    (the real SFTTrainer; a second callback records each step's weights after the optimizer step)."""
    import torch
    from transformers import TrainerCallback

    from verifier.train.sft import run_sft

    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            snapshots[state.global_step] = {
                name: param.detach().clone() for name, param in model.named_parameters()
            }

    config = _config(
        tiny_model_dir, labelled_path, tmp_path / "sft", use_peft=False, dtype="float32",
        learning_rate=3e-3, average_tail=0.5,
    )  # fmt: skip
    result = run_sft(config, callbacks=(Record(),))
    assert sorted(snapshots) == [1, 2, 3, 4]
    saved = _weights(Path(result.model_dir))
    changed = 0
    for name, last in snapshots[4].items():
        if name not in saved:
            continue  # tied to another saved tensor
        mean = (snapshots[3][name] + last) / 2
        torch.testing.assert_close(saved[name], mean, rtol=1e-6, atol=1e-7)
        changed += not torch.equal(snapshots[3][name], last)
    assert changed  # steps 3 and 4 differ: the mean is not just one of them


def test_average_tail_outside_zero_to_one_is_refused(tiny_model_dir: Path, labelled_path: Path) -> None:
    from rubric_pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match="average_tail"):
        _config(tiny_model_dir, labelled_path, Path("unused"), average_tail=1.5)
