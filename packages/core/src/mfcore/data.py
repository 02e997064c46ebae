"""`mfcore data`: raw text / instruction / chat files -> packed token sequences in MindRecord.

Every example becomes token segments (see data_formats); examples are concatenated into one stream
(each document ends with EOS, so documents are separated by it) and cut into full sequences of
`seq_length` tokens. Each sequence is stored as `input_ids` and `labels` (int32, `seq_length` each):
labels equal input_ids except -100 on tokens that are not trained on (instruction prompts), in the
Hugging Face convention (the model shifts labels by one). The tail that does not fill a sequence is
dropped and counted. Output is atomic: written beside the target, renamed on success.
"""
from __future__ import annotations

import glob
import os
import shutil
import tempfile
from dataclasses import dataclass, asdict
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ConfigError

IGNORE_INDEX = -100
COLUMNS = ("input_ids", "labels")
PAGE_SIZE = 1 << 20
HEADER_SIZE = 1 << 18


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
    """Concatenates (ids, trainable) segments and cuts full sequences of `seq_length` tokens."""

    def __init__(self, seq_length: int, stats: Optional[PackStats] = None):
        if seq_length < 2:
            raise ConfigError("--seq-length", f"must be at least 2, got {seq_length}")
        self.seq_length = seq_length
        self.stats = stats or PackStats()
        self._ids: List[int] = []
        self._labels: List[int] = []

    def add(self, segments: Sequence[Tuple[List[int], bool]]) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        count = sum(len(ids) for ids, _ in segments)
        if count == 0:
            self.stats.empty += 1
            return
        self.stats.documents += 1
        self.stats.tokens += count
        for ids, trainable in segments:
            self._ids.extend(ids)
            self._labels.extend(ids if trainable else [IGNORE_INDEX] * len(ids))
            if trainable:
                self.stats.trained_tokens += len(ids)
        while len(self._ids) >= self.seq_length:
            n = self.seq_length
            ids_arr = np.asarray(self._ids[:n], dtype=np.int32)
            labels_arr = np.asarray(self._labels[:n], dtype=np.int32)
            del self._ids[:n], self._labels[:n]
            self.stats.sequences += 1
            yield ids_arr, labels_arr

    def finish(self) -> None:
        self.stats.dropped_tokens = len(self._ids)
        self._ids.clear()
        self._labels.clear()


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
                yield from packer.add(fmt.segments(record, tokenizer, where))
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
    from tqdm import tqdm

    return tqdm(desc="tokenizing", unit=" docs", dynamic_ncols=True)


def write_mindrecord(output: os.PathLike, sequences: Iterable[Tuple[np.ndarray, np.ndarray]],
                     seq_length: int, batch: int = 1024) -> int:
    """Write sequences to `output` (+ its `.db` index) atomically; returns the number written.

    MindRecord names the index file after the data file inside the file itself, so both are written
    under their final names in a temporary directory beside the target, then moved into place.
    """
    from mindspore.mindrecord import FileWriter

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
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
        reader = FileReader(str(file), num_consumer=1)
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


def load_tokenizer(name_or_path: str, tokenizer_type: Optional[str] = None):
    """A preset or tokenizer directory (AutoTokenizer), or a model file with its registered class name."""
    from .auto import AutoTokenizer

    if tokenizer_type:
        return AutoTokenizer.tokenizer_class(tokenizer_type).from_pretrained(name_or_path)
    if Path(name_or_path).is_file():
        raise ConfigError("--tokenizer", f"{name_or_path} is a file: say which tokenizer reads it with "
                                         "--tokenizer-type (e.g. LlamaTokenizer, Llama3Tokenizer), or pass a "
                                         "directory holding tokenizer_config.json")
    return AutoTokenizer.from_pretrained(name_or_path)


def run_data(args) -> int:
    """The `mfcore data` command."""
    from .data_formats import list_datasets, resolve_format

    if args.list:
        for name, kind, plugin, description in list_datasets():
            print(f"{name:<14} {kind:<9} {plugin:<10} {description}")
        return 0
    for flag in ("format", "input", "tokenizer", "seq_length", "output"):
        if not getattr(args, flag):
            raise ConfigError(f"--{flag.replace('_', '-')}", "is required (see `mfcore data --help`)")
    fmt = resolve_format(args.format, args.template)
    files = expand_inputs(args.input)
    tokenizer = load_tokenizer(args.tokenizer, args.tokenizer_type)
    sequences, stats = pack_files(fmt, files, tokenizer, args.seq_length, progress=not args.quiet)
    written = write_mindrecord(args.output, sequences, args.seq_length)
    print(f"wrote {args.output}: {written} sequences of {args.seq_length} tokens from {len(files)} file(s)")
    print(stats.summary())
    if args.stats_json:
        print(_json(dict(asdict(stats), files=len(files), output=str(args.output), seq_length=args.seq_length)))
    return 0


def _json(data) -> str:
    import json

    return json.dumps(data, sort_keys=True)
