"""Writes src/mf_llama2/tiny_tokenizer.model, the tokenizer of the llama2-tiny preset (kept in the repo).

A 512-piece SentencePiece BPE trained on mfcore's own demo corpus (mfcore.cli.demo_corpus, seeded), with
byte fallback so that any text encodes. It makes `AutoTokenizer.from_pretrained("llama2-tiny")`, and so
`mfcore run --model llama2-tiny` and the README's Python snippet, work from a clean clone; it is not
Llama 2's tokenizer (that one is not redistributed here). Re-run after changing the corpus:
`python packages/llama2/scripts/make_tiny_tokenizer.py`.
"""
import tempfile
from pathlib import Path

import sentencepiece as spm

from mfcore.cli.demo_corpus import documents

TARGET = Path(__file__).resolve().parents[1] / "src" / "mf_llama2" / "tiny_tokenizer.model"


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        corpus = Path(work) / "corpus.txt"
        corpus.write_text("\n".join(documents()) + "\n", encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(Path(work) / "tiny"), vocab_size=512, model_type="bpe",
            character_coverage=1.0, byte_fallback=True, normalization_rule_name="identity",
            add_dummy_prefix=True, remove_extra_whitespaces=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            minloglevel=2)
        TARGET.write_bytes((Path(work) / "tiny.model").read_bytes())
    print(f"wrote {TARGET} ({TARGET.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
