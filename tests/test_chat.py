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
