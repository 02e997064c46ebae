"""Packed sequences in MindRecord, MindSpore's own format: written atomically, read back whole.

Columns `input_ids` and `labels` (int32, `seq_length` each). Output is atomic: written beside the
target, renamed on success.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

from mfcore.errors import ConfigError
from mfcore.utils.atomic import temporary_directory

COLUMNS = ("input_ids", "labels")
PAGE_SIZE = 1 << 20
HEADER_SIZE = 1 << 18


def write_mindrecord(output: os.PathLike, sequences: Iterable[Tuple[np.ndarray, np.ndarray]],
                     seq_length: int, batch: int = 1024) -> int:
    """Write sequences to `output` (+ its `.db` index) atomically; returns the number written.

    MindRecord names the index file after the data file inside the file itself, so both are written
    under their final names in a temporary directory beside the target, then moved into place.
    """
    from mindspore.mindrecord import FileWriter

    output = Path(output)
    tmp_dir = temporary_directory(output)  # a killed run's leftovers are removed by the next write
    count = 0
    try:
        writer = FileWriter(str(tmp_dir / output.name), shard_num=1, overwrite=True)
        # MindRecord reserves a 16 MB header and pads to 32 MB pages by default: small pages keep small data small.
        writer.set_header_size(HEADER_SIZE)
        writer.set_page_size(PAGE_SIZE)
        writer.add_schema({name: {"type": "int32", "shape": [seq_length]} for name in COLUMNS},
                          "mfcore packed causal LM sequences")
        rows = []
        for ids, labels in sequences:
            rows.append({"input_ids": ids, "labels": labels})
            if len(rows) >= batch:
                writer.write_raw_data(rows)
                count += len(rows)
                rows = []
        if rows:
            writer.write_raw_data(rows)
            count += len(rows)
        if count == 0:
            raise ConfigError("--seq-length", f"the input holds fewer than {seq_length} tokens: no full "
                                              "sequence to write; use a shorter --seq-length or more data")
        writer.commit()
        db_name = output.name + ".db"
        os.replace(tmp_dir / db_name, output.parent / db_name)
        os.replace(tmp_dir / output.name, output)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return count


def mindrecord_files(path: os.PathLike) -> List[Path]:
    """A .mindrecord file, or every *.mindrecord file in a directory (sorted)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.mindrecord"))
        if not files:
            raise ConfigError("dataset_dir", f"{path} holds no *.mindrecord file; create one with `mfcore data`")
        return files
    if not path.exists():
        raise ConfigError("dataset_dir", f"{path}: no such file; create it with `mfcore data`")
    return [path]


def read_mindrecord(path: os.PathLike, columns: Sequence[str] = COLUMNS) -> Dict[str, np.ndarray]:
    """All rows of the MindRecord file(s) at `path` as {column: int32 array [rows, seq_length]}.

    A file without `labels` (e.g. written by MindFormers' wiki preprocessing) gets labels = input_ids.
    """
    from mindspore.mindrecord import FileReader

    parts: Dict[str, List[np.ndarray]] = {name: [] for name in columns}
    for file in mindrecord_files(path):
        if not Path(str(file) + ".db").is_file():
            raise ConfigError(str(file), f"its index {file.name}.db is missing; a MindRecord file needs the .db "
                                         "written beside it (copy both, or re-create them with `mfcore data`)")
        try:
            reader = FileReader(str(file), num_consumer=1)
        except RuntimeError as exc:  # zero bytes, garbage, a truncated header: MindSpore's own words, one line
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(str(file), f"is not a readable MindRecord file ({reason}); re-create it with "
                                         "`mfcore data`") from None
        try:
            for row in reader.get_next():
                if "input_ids" not in row:
                    raise ConfigError(str(file), f"has no 'input_ids' column (columns: {sorted(row)})")
                for name in columns:
                    value = row.get(name, row["input_ids"] if name == "labels" else None)
                    if value is None:
                        raise ConfigError(str(file), f"has no {name!r} column")
                    parts[name].append(np.asarray(value, dtype=np.int32).reshape(-1))
        finally:
            reader.close()
    if not parts["input_ids"]:
        raise ConfigError(str(path), "holds no rows")
    lengths = {len(a) for a in parts["input_ids"]}
    if len(lengths) != 1:
        raise ConfigError(str(path), f"rows have different lengths {sorted(lengths)}; pack with one --seq-length")
    return {name: np.stack(arrays) for name, arrays in parts.items()}


def check_data_fits_model(data: Dict[str, np.ndarray], where: str, config) -> None:
    """Token ids inside the model's vocabulary and sequences inside its context, checked before training
    starts (an id >= vocab_size crashed mid-training; a longer sequence ran past the context silently).
    MindFormers' datasets hold seq_length + 1 tokens (the model shifts them), so that length is fine."""
    ids = data["input_ids"]
    vocab = getattr(config, "vocab_size", None)
    if isinstance(vocab, int) and ids.size:
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab:
            bad = low if low < 0 else high
            rows = np.nonzero((ids < 0) | (ids >= vocab))[0]
            raise ConfigError(where, f"token id {bad} (sequence {int(rows[0])}, {len(np.unique(rows))} sequence(s) "
                                     f"in all) is outside the model's vocabulary [0, {vocab}); the data was made "
                                     "with another tokenizer: re-create it with this model's tokenizer")
    from mfcore.generation.validation import context_length

    context = context_length(config)
    length = ids.shape[1] if ids.ndim == 2 else 0
    if context is not None and length > context + 1:
        raise ConfigError(where, f"sequences of {length} tokens are longer than the model's context of {context} "
                                 f"(seq_length / max_position_embedding); pack the data with --seq-length {context}")
    seq_length = getattr(config, "seq_length", None)
    if isinstance(seq_length, int) and length not in (seq_length, seq_length + 1):
        import sys

        print(f"note: {where}: sequences of {length} tokens, the model's seq_length is {seq_length}; training "
              f"runs on {length}-token sequences", file=sys.stderr)
