"""Packing: token segments of documents -> full training sequences of `seq_length` tokens.

Every example becomes token segments (see mfcore.data.formats); examples are concatenated into one stream
(each document ends with EOS, so documents are separated by it) and cut into full sequences of
`seq_length` tokens. Each sequence is stored as `input_ids` and `labels` (int32, `seq_length` each):
labels equal input_ids except -100 on tokens that are not trained on (instruction prompts), in the
Hugging Face convention (the model shifts labels by one). The tail that does not fill a sequence is
dropped and counted. mfcore.data.mindrecord writes the sequences.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from mfcore.errors import ConfigError

IGNORE_INDEX = -100


@dataclass
class PackStats:
    documents: int = 0        # examples that produced tokens
    empty: int = 0            # examples without text (skipped)
    tokens: int = 0           # tokens produced by the tokenizer, special tokens included
    trained_tokens: int = 0   # of those, tokens with a label (not masked)
    sequences: int = 0        # full sequences written
    dropped_tokens: int = 0   # tokens of the last, incomplete sequence

    def summary(self) -> str:
        return (f"{self.documents} documents ({self.empty} empty skipped), {self.tokens} tokens "
                f"({self.trained_tokens} with labels), {self.sequences} sequences, "
                f"{self.dropped_tokens} tokens of remainder dropped")


class Packer:
    """Concatenates (ids, trainable) segments and cuts full sequences of `seq_length` tokens.

    Linear in the tokens: pending tokens are numpy pieces joined once per `add`, and full sequences are
    sliced off the joined array (deleting from the front of a list per sequence was quadratic: a 50 MB
    document never finished). Memory: the pending tail (< seq_length) plus the document being added.
    """

    def __init__(self, seq_length: int, stats: Optional[PackStats] = None):
        if isinstance(seq_length, bool) or not isinstance(seq_length, int) or seq_length < 2:
            raise ConfigError("--seq-length", f"must be an integer of at least 2, got {seq_length!r}")
        self.seq_length = seq_length
        self.stats = stats or PackStats()
        self._ids = np.zeros(0, dtype=np.int32)     # the tail that did not fill a sequence yet
        self._labels = np.zeros(0, dtype=np.int32)

    def add(self, segments: Sequence[Tuple[List[int], bool]]) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        count = sum(len(ids) for ids, _ in segments)
        if count == 0:
            self.stats.empty += 1
            return
        self.stats.documents += 1
        self.stats.tokens += count
        ids_pieces, label_pieces = [self._ids], [self._labels]
        for ids, trainable in segments:
            piece = np.asarray(ids, dtype=np.int32)
            ids_pieces.append(piece)
            label_pieces.append(piece if trainable else np.full(len(piece), IGNORE_INDEX, dtype=np.int32))
            if trainable:
                self.stats.trained_tokens += len(piece)
        ids_all, labels_all = np.concatenate(ids_pieces), np.concatenate(label_pieces)
        n = self.seq_length
        full = len(ids_all) // n * n
        # The tail is copied out first so that the big joined arrays can be freed while sequences are used.
        self._ids, self._labels = ids_all[full:].copy(), labels_all[full:].copy()
        for start in range(0, full, n):
            self.stats.sequences += 1
            yield ids_all[start:start + n].copy(), labels_all[start:start + n].copy()

    def finish(self) -> None:
        self.stats.dropped_tokens = len(self._ids)
        self._ids = self._ids[:0]
        self._labels = self._labels[:0]


def expand_inputs(patterns: Sequence[str]) -> List[Path]:
    files: List[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            raise ConfigError("--input", f"{pattern!r} matches no file")
        files.extend(Path(m) for m in matches)
    return files


def pack_files(fmt, files: Sequence[Path], tokenizer, seq_length: int,
               progress: bool = True) -> Tuple[Iterator[Tuple[np.ndarray, np.ndarray]], PackStats]:
    """A generator of packed (input_ids, labels) sequences, and the stats it fills as it runs."""
    packer = Packer(seq_length)

    def generate():
        bar = _progress(files, progress)
        for path in files:
            for where, record in fmt.records(path):
                try:
                    segments = fmt.segments(record, tokenizer, where)
                except ConfigError as exc:
                    if str(exc.field) != "text":
                        raise
                    raise ConfigError(where, str(exc)) from None  # name the file and line of the record
                yield from packer.add(segments)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(seqs=packer.stats.sequences, refresh=False)
        packer.finish()
        if bar is not None:
            bar.close()

    return generate(), packer.stats


def _progress(files, enabled):
    if not enabled:
        return None
    from mfcore.utils.progress import progress_bar

    return progress_bar(desc="tokenizing", unit=" docs")
