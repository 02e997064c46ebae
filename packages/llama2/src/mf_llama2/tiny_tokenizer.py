"""The llama2-tiny preset's tokenizer, so that the tiny preset runs from a clean clone.

tiny_tokenizer.model (beside this file, 8 KB) is a 512-piece SentencePiece BPE with byte fallback,
trained on mfcore's own demo corpus by scripts/make_tiny_tokenizer.py; it is not Llama 2's tokenizer
(which is not redistributed). The preset's model has Llama 2's 32000-token vocabulary, so on first use
the model file is padded to 32000 pieces with unused ones (<unusedN>: a random tiny model's ids all
decode) and cached in $MFCORE_HOME/tokenizers/llama2-tiny/tokenizer.model.
"""
from __future__ import annotations

from pathlib import Path

SHIPPED = Path(__file__).with_name("tiny_tokenizer.model")
VOCAB_SIZE = 32000


def vocab_file() -> str:
    """The padded tokenizer.model of llama2-tiny, built on first use."""
    from mfcore.utils.atomic import atomic_write_bytes
    from mfcore.utils.paths import mfcore_home

    target = mfcore_home() / "tokenizers" / "llama2-tiny" / "tokenizer.model"
    if not target.exists():
        from sentencepiece import sentencepiece_model_pb2 as model_pb2

        model = model_pb2.ModelProto()
        model.ParseFromString(SHIPPED.read_bytes())
        for index in range(len(model.pieces), VOCAB_SIZE):
            piece = model.pieces.add()
            piece.piece, piece.score, piece.type = f"<unused{index}>", 0.0, model_pb2.ModelProto.SentencePiece.UNUSED
        atomic_write_bytes(target, model.SerializeToString())
    return str(target)
