"""`mfcore chat`: turns laid out with the Llama 3 chat template, answers fed back into the next turn."""
import argparse
import io

import mfcore
from mfcore.cli.chat import run_chat


def test_two_turn_chat_matches_generate_on_the_template(tmp_path, testdata, capsys):
    directory = tmp_path / "llama3-tiny"
    model = mfcore.AutoModelForCausalLM.from_pretrained("llama3-tiny")
    model.save_pretrained(directory)
    tokenizer = mfcore.AutoTokenizer.from_pretrained("llama3-8b", vocab_file=str(testdata / "llama3" / "tokenizer.model"))
    tokenizer.save_pretrained(directory)

    args = argparse.Namespace(model=None, config=None, load_checkpoint=str(directory), tokenizer=None,
                              register_path=None, system="Be brief.", max_new_tokens=6, do_sample=None,
                              temperature=None, top_k=None, top_p=None, repetition_penalty=None, seed=None)
    assert run_chat(args, stdin=io.StringIO("Hi there\nAnd then?\n")) == 0
    printed = capsys.readouterr().out  # each answer streamed, then a newline (answers may hold newlines)

    # Reference: the same conversation built by hand with the tokenizer and model.generate.
    messages = [{"role": "system", "content": "Be brief."}]
    stops = [128001, 128009]
    answers = []
    for user in ("Hi there", "And then?"):
        messages.append({"role": "user", "content": user})
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        assert prompt[:2] == [128000, 128006] and prompt[-4:] == [128006, 78191, 128007, 271]
        new = [int(t) for t in model.generate([prompt], max_new_tokens=6, do_sample=False,
                                              eos_token_id=stops)[0][len(prompt):]]
        while new and new[-1] in stops + [model.generation_config.pad_token_id]:
            new.pop()
        answer = tokenizer.decode(new, skip_special_tokens=True)
        answers.append(answer)
        messages.append({"role": "assistant", "content": answer})
    assert printed == "".join(answer + "\n" for answer in answers)


def test_base_model_tokenizer_files_chat_on_the_presets_template(tmp_path, testdata, monkeypatch, capsys):
    """Hugging Face tokenizer files of a base model (tokenizer.json, no chat_template: Meta-Llama-3-8B's kind)
    load as a plain PreTrainedTokenizerFast; `mfcore chat --model llama3-8b` then uses the preset's Llama 3
    template instead of failing, and its ids equal the Llama 3 tokenizer's own."""
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    from mfcore.tasks.runner import _with_preset_chat_template

    pytest.importorskip("transformers")
    tool = Path(__file__).resolve().parents[2] / "shared" / "tools" / "llama3-tokenizer-json.py"
    if not tool.exists():
        pytest.skip(f"{tool} not found (the shared/ folder beside the repo)")
    home = tmp_path / "home"
    target = home / "models" / "llama3-8b"  # stand-in weights: tiny dimensions under the preset's name
    mfcore.AutoModelForCausalLM.from_pretrained("llama3-tiny").save_pretrained(target)
    subprocess.run([sys.executable, str(tool), str(testdata / "llama3" / "tokenizer.model"), str(target)],
                   check=True, capture_output=True, timeout=300)
    reference = mfcore.AutoTokenizer.from_pretrained("llama3-8b", vocab_file=str(testdata / "llama3" / "tokenizer.model"))
    monkeypatch.setenv("MFCORE_HOME", str(home))
    messages = [{"role": "user", "content": "Hi there"}]
    plain = mfcore.AutoTokenizer.from_pretrained(target)
    with pytest.raises(ValueError, match="no chat template"):
        plain.apply_chat_template(messages, add_generation_prompt=True)
    borrowed = _with_preset_chat_template(plain, "llama3-8b")
    assert list(borrowed.apply_chat_template(messages, add_generation_prompt=True)) == \
        list(reference.apply_chat_template(messages, add_generation_prompt=True))

    args = argparse.Namespace(model="llama3-8b", config=None, load_checkpoint=None, tokenizer=None,
                              register_path=None, system=None, max_new_tokens=3, do_sample=None,
                              temperature=None, top_k=None, top_p=None, repetition_penalty=None, seed=None)
    assert run_chat(args, stdin=io.StringIO("Hi there\n")) == 0
