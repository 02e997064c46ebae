"""Test helpers for evaluation: a tiny random Hugging Face Llama with a small byte-level BPE tokenizer (both
written by transformers / tokenizers, the independent references), and three offline lm-eval tasks
(multiple choice, perplexity, generate_until) defined by YAML over JSON lines written here.
(Not conftest.py: the tests import these by name.)"""
import json
from pathlib import Path

CORPUS = ["the cat sat on the mat.", "a dog ran in the park.", "the sun is hot and the moon is cold.",
          "water is wet. fire is hot. ice is cold.", "one two three four five six seven eight nine ten."]
MAX_LENGTH = 32  # both backends' max_length: the perplexity texts are longer, so windows roll


def make_checkpoint(directory: Path, seed: int = 0) -> Path:
    """transformers LlamaForCausalLM (fp32, random weights and norms) + tokenizer.json, via save_pretrained."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 3, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])  # BOS, as Llama
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(
        directory)
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=192,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=128, bos_token_id=0, eos_token_id=1)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(1.0, 0.2) if name.endswith("norm.weight") else param.normal_(0.0, 0.3)
    model.save_pretrained(directory)
    return directory


MC_DOCS = [
    {"question": "the cat sat on the", "choices": ["mat.", "park.", "moon is cold."], "answer": 0},
    {"question": "a dog ran in the", "choices": ["sun.", "park.", "fire is hot."], "answer": 1},
    {"question": "water is", "choices": ["hot.", "cold.", "wet."], "answer": 2},
    {"question": "one two three", "choices": ["four five", "nine ten", "the mat"], "answer": 0},
    {"question": "ice is", "choices": ["cold.", "wet.", "a dog"], "answer": 0},
    {"question": "", "choices": ["the cat", "sat on", "the moon"], "answer": 0},
]
PPL_DOCS = [{"text": " ".join(CORPUS)}, {"text": CORPUS[2] + " " + CORPUS[0] * 3}, {"text": "the sun."}]
GEN_DOCS = [{"prompt": "the cat sat on", "answer": " the mat"}, {"prompt": "water is", "answer": " wet"},
            {"prompt": "one two three four five", "answer": " six"}, {"prompt": "a dog", "answer": " ran"}]

TASKS = {
    "mf_mc": ("mc.jsonl", MC_DOCS, {
        "output_type": "multiple_choice", "doc_to_text": "{{question}}", "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}", "target_delimiter": " ",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}),
    "mf_ppl": ("ppl.jsonl", PPL_DOCS, {
        "output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{text}}",
        "metric_list": [{"metric": m, "aggregation": a, "higher_is_better": False} for m, a in (
            ("word_perplexity", "weighted_perplexity"), ("byte_perplexity", "weighted_perplexity"),
            ("bits_per_byte", "bits_per_byte"))]}),
    "mf_gen": ("gen.jsonl", GEN_DOCS, {
        "output_type": "generate_until", "doc_to_text": "{{prompt}}", "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["."], "max_gen_toks": 6, "do_sample": False},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}]}),
}


def write_tasks(directory: Path) -> Path:
    """The three task YAMLs and their data files in `directory` (pass it as lm-eval's include_path)."""
    import yaml

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, (file, docs, spec) in TASKS.items():
        data = directory / file
        data.write_text("".join(json.dumps(d) + "\n" for d in docs))
        task = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
                "test_split": "test", **spec, "metadata": {"version": 1.0}}
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    return directory
