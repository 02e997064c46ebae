"""Dataset formats and prompt templates: raw files -> token ids with a loss mask.

A *format* reads records from one input file (`records(path)`) and turns one record into token
segments (`segments(record, tokenizer)`): a list of `(ids, trainable)` pairs. Text formats give the
whole document as trainable; instruction formats mark the prompt as not trainable so its tokens get
label -100. A *template* renders chat messages into segments; the `chat` format uses one (a
registered template such as mf-llama3's `llama3-chat`, or the tokenizer's own `apply_chat_template`).

Formats and templates are plugins: a plugin registers them with `register_datasets(register)` as
`register("name", "package.module:Object")`, where the object has `kind = "format"` or `"template"`.
Nothing here imports MindSpore.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from mfcore.errors import ConfigError

# One piece of a tokenized example: token ids and whether they are trained on (label) or masked.
Segment = Tuple[List[int], bool]
# What a template yields before tokenization: text (encoded without special tokens) or token ids
# (special tokens, looked up by the template, so text that looks like "<|eot_id|>" stays plain text).
Piece = Union[str, List[int]]


def encode_text(tokenizer, text: str) -> List[int]:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. "\ud800" in JSON: no tokenizer can encode it
        raise ConfigError("text", f"holds {text[exc.start:exc.end]!r} at character {exc.start}, which is not a "
                                  "character (a lone UTF-16 surrogate); fix or drop that record") from None
    return list(tokenizer.encode(text, add_special_tokens=False))


def special_id(tokenizer, token: str) -> int:
    """The id of a special token string such as '<|eot_id|>', asking the tokenizer."""
    for method in ("convert_tokens_to_ids", "token_to_id"):
        lookup = getattr(tokenizer, method, None)
        if lookup is not None:
            value = lookup(token)
            if isinstance(value, list):
                value = value[0] if len(value) == 1 else None
            if isinstance(value, int) and value >= 0 and value != getattr(tokenizer, "unk_token_id", None):
                return value
    raise ConfigError("tokenizer", f"{type(tokenizer).__name__} has no special token {token!r}; "
                                   "this template needs a tokenizer of its model family")


def document_segments(tokenizer, text: str) -> List[Segment]:
    """A plain document: BOS (when the tokenizer has one) + text + EOS, all trained on."""
    ids = encode_text(tokenizer, text)
    bos = getattr(tokenizer, "bos_token_id", None)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ConfigError("tokenizer", f"{type(tokenizer).__name__} has no eos_token_id; packing needs one "
                                       "to separate documents")
    return [(([bos] if bos is not None else []) + ids + [eos], True)]


def _not_utf8(path: Path, line: int, exc: UnicodeDecodeError) -> ConfigError:
    return ConfigError(f"{path}:{line}", f"is not valid UTF-8 ({exc.reason} at byte {exc.start} of the line: "
                                         f"{exc.object[exc.start:exc.start + 4]!r}); re-encode the file as UTF-8 "
                                         "(e.g. iconv -f latin1 -t utf-8)")


def read_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 file (universal newlines); a bad byte is an error naming the file and line."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _not_utf8(path, number, exc) from None
            yield line[:-2] + "\n" if line.endswith("\r\n") else line


def read_text(path: Path) -> str:
    """A whole UTF-8 file; a bad byte is an error naming the file and its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line_end = data.find(b"\n", exc.start)
        line = data[line_start:line_end if line_end >= 0 else len(data)]
        raise _not_utf8(path, data.count(b"\n", 0, exc.start) + 1,
                        UnicodeDecodeError("utf-8", line, exc.start - line_start, exc.end - line_start,
                                           exc.reason)) from None


def read_json_records(path: Path) -> Iterator[Tuple[int, Any]]:
    """(line number, object) for a .jsonl file, or (index, item) for a .json file holding a list."""
    if path.suffix == ".json":
        data = json.loads(read_text(path))
        if not isinstance(data, list):
            raise ConfigError(str(path), "a .json input must hold a list of records (use .jsonl for one per line)")
        yield from enumerate(data, start=1)
        return
    for number, line in enumerate(read_lines(path), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}", f"not valid JSON: {exc}") from exc


def field(record: Any, names: Sequence[str], where: str, required: bool = True) -> Any:
    if not isinstance(record, dict):
        raise ConfigError(where, f"expected a JSON object, got {type(record).__name__}")
    for name in names:
        if name in record:
            return record[name]
    if required:
        raise ConfigError(where, f"missing key {' or '.join(repr(n) for n in names)} (keys: {sorted(record)})")
    return None


class TextFormat:
    """`text`: each input file is one document."""

    kind = "format"
    description = "plain text files, one document per file"

    def records(self, path: Path) -> Iterator[Tuple[str, Any]]:
        yield str(path), read_text(path)

    def segments(self, record: str, tokenizer, where: str = "") -> List[Segment]:
        return document_segments(tokenizer, record) if record.strip() else []


class JsonlFormat:
    """`jsonl`: one JSON object per line with the document in `text` (or `content`)."""

    kind = "format"
    description = "JSON lines, the document in the 'text' (or 'content') key"

    def records(self, path: Path) -> Iterator[Tuple[str, Any]]:
        for number, record in read_json_records(path):
            yield f"{path}:{number}", record

    def segments(self, record: Any, tokenizer, where: str = "") -> List[Segment]:
        text = field(record, ("text", "content"), where)
        if not isinstance(text, str):
            raise ConfigError(f"{where}.text", f"must be a string, got {type(text).__name__}")
        return document_segments(tokenizer, text) if text.strip() else []


# WikiText marks article titles as " = Title = " (sections use " = = Sub = = ") and splits numbers
# with " @,@ " / " @.@ " / " @-@ "; undone so the tokenizer sees normal text.
_WIKI_TITLE = re.compile(r"^ = [^=].*[^=] = $")
_WIKI_JOINERS = [(" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", ".")]


class WikitextFormat:
    """`wikitext`: raw WikiText-2/103 files (wiki.train.raw); one document per article."""

    kind = "format"
    description = "WikiText raw files (wiki.*.raw), split into articles at ' = Title = ' lines"

    def records(self, path: Path) -> Iterator[Tuple[str, Any]]:
        article: List[str] = []
        start = 1
        for number, line in enumerate(read_lines(path), start=1):
            if _WIKI_TITLE.match(line.rstrip("\n")) and any(part.strip() for part in article):
                yield f"{path}:{start}", "".join(article)
                article, start = [], number
            article.append(line)
        if any(part.strip() for part in article):
            yield f"{path}:{start}", "".join(article)

    @staticmethod
    def clean(text: str) -> str:
        for marker, joined in _WIKI_JOINERS:
            text = text.replace(marker, joined)
        lines = [line.strip() for line in text.splitlines()]
        return "\n".join(line for line in lines if line)

    def segments(self, record: str, tokenizer, where: str = "") -> List[Segment]:
        text = self.clean(record)
        return document_segments(tokenizer, text) if text else []


class AlpacaFormat:
    """`alpaca`: {instruction, input, output} records (Stanford Alpaca); the prompt is masked."""

    kind = "format"
    description = "Alpaca JSON / JSON lines {instruction, input, output}; loss on the response only"
    # Stanford Alpaca's prompt texts (github.com/tatsu-lab/stanford_alpaca, train.py).
    prompt_with_input = (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
    prompt_no_input = (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:\n")

    def records(self, path: Path) -> Iterator[Tuple[str, Any]]:
        for number, record in read_json_records(path):
            yield f"{path}:{number}", record

    def prompt(self, record: Any, where: str) -> str:
        instruction = field(record, ("instruction",), where)
        extra = field(record, ("input",), where, required=False) or ""
        template = self.prompt_with_input if str(extra).strip() else self.prompt_no_input
        return template.format(instruction=instruction, input=extra)

    def segments(self, record: Any, tokenizer, where: str = "") -> List[Segment]:
        prompt = self.prompt(record, where)
        output = field(record, ("output",), where)
        bos = getattr(tokenizer, "bos_token_id", None)
        prompt_ids = ([bos] if bos is not None else []) + encode_text(tokenizer, prompt)
        return [(prompt_ids, False), (encode_text(tokenizer, str(output)) + [tokenizer.eos_token_id], True)]


def normalize_messages(record: Any, where: str) -> List[Dict[str, str]]:
    """OpenAI-style {"messages": [{"role", "content"}]} or ShareGPT {"conversations": [{"from", "value"}]}."""
    messages = field(record, ("messages", "conversations"), where)
    if not isinstance(messages, list) or not messages:
        raise ConfigError(f"{where}.messages", "must be a non-empty list of {role, content} objects")
    roles = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}
    out = []
    for index, message in enumerate(messages):
        here = f"{where}.messages[{index}]"
        role = field(message, ("role", "from"), here)
        content = field(message, ("content", "value"), here)
        if role not in roles:
            raise ConfigError(f"{here}.role", f"unknown role {role!r}; use system, user or assistant")
        out.append({"role": roles[role], "content": str(content)})
    return out


class ChatFormat:
    """`chat`: conversations; a chat template renders them, loss on the assistant turns only."""

    kind = "format"
    description = "chat JSON lines {messages: [{role, content}]} (or ShareGPT); loss on assistant turns"

    def __init__(self, template=None):
        self.template = template  # a template object; None: the tokenizer's apply_chat_template

    def records(self, path: Path) -> Iterator[Tuple[str, Any]]:
        for number, record in read_json_records(path):
            yield f"{path}:{number}", record

    def segments(self, record: Any, tokenizer, where: str = "") -> List[Segment]:
        messages = normalize_messages(record, where)
        if self.template is not None:
            return tokenize_pieces(tokenizer, self.template.render(messages, tokenizer))
        return tokenizer_template_segments(tokenizer, messages, where)


def tokenize_pieces(tokenizer, pieces: Sequence[Tuple[Piece, bool]]) -> List[Segment]:
    segments: List[Segment] = []
    for piece, trainable in pieces:
        ids = encode_text(tokenizer, piece) if isinstance(piece, str) else list(piece)
        if segments and segments[-1][1] == trainable:
            segments[-1][0].extend(ids)
        else:
            segments.append((ids, trainable))
    return segments


def tokenizer_template_segments(tokenizer, messages: List[Dict[str, str]], where: str) -> List[Segment]:
    """Mask with any `apply_chat_template`: each assistant turn is what its message adds to the
    rendering of the conversation before it (with the generation prompt)."""
    apply = getattr(tokenizer, "apply_chat_template", None)
    if apply is None:
        raise ConfigError("--template", f"{type(tokenizer).__name__} has no chat template; pass a registered "
                                        "template (see `mfcore data --list`)")
    segments: List[Segment] = []
    done: List[int] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = list(apply(messages[:index], add_generation_prompt=True, tokenize=True))
        full = list(apply(messages[:index + 1], add_generation_prompt=False, tokenize=True))
        if prompt[:len(done)] != done or full[:len(prompt)] != prompt:
            raise ConfigError(where, "the tokenizer's chat template does not render a conversation as a prefix "
                                     "of its continuation; pass --template NAME")
        segments.append((prompt[len(done):], False))
        segments.append((full[len(prompt):], True))
        done = full
    if not segments:
        raise ConfigError(where, "a chat record needs at least one assistant message to train on")
    return segments


class ChatMLTemplate:
    """`chatml`: <|im_start|>role\\ncontent<|im_end|>\\n, a model-neutral chat layout (as text)."""

    kind = "template"
    description = "ChatML layout as plain text (for tokenizers without chat special tokens)"

    def render(self, messages: List[Dict[str, str]], tokenizer) -> List[Tuple[Piece, bool]]:
        pieces: List[Tuple[Piece, bool]] = []
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is not None:
            pieces.append(([bos], False))
        for message in messages:
            pieces.append((f"<|im_start|>{message['role']}\n", False))
            trainable = message["role"] == "assistant"
            pieces.append((message["content"], trainable))
            pieces.append(("<|im_end|>\n", False))
            if trainable:
                pieces.append(([tokenizer.eos_token_id], True))
        return pieces


def resolve_format(name: str, template: Optional[str] = None):
    """The registered format object for `name` (chat formats get their template)."""
    from mfcore.plugins.manager import get_plugins

    datasets = get_plugins().datasets
    entries = {e.name: e for e in datasets.entries()}
    formats = sorted(n for n, e in entries.items() if getattr(_load(e), "kind", "") == "format")
    templates = sorted(n for n, e in entries.items() if getattr(_load(e), "kind", "") == "template")
    if name not in formats:
        raise ConfigError("--format", f"unknown dataset format {name!r}; known: {', '.join(formats)}")
    fmt = _instance(_load(entries[name]))
    if template:
        if template not in templates:
            raise ConfigError("--template", f"unknown template {template!r}; known: {', '.join(templates)}")
        if not hasattr(fmt, "template"):
            raise ConfigError("--template", f"format {name!r} takes no template")
        fmt.template = _instance(_load(entries[template]))
    return fmt


def _load(entry):
    return entry.load()


def _instance(obj):
    return obj() if isinstance(obj, type) else obj


def list_datasets() -> List[Tuple[str, str, str, str]]:
    """(name, kind, plugin, description) of every registered format and template."""
    from mfcore.plugins.manager import get_plugins

    rows = []
    for entry in get_plugins().datasets.entries():
        obj = entry.load()
        rows.append((entry.name, getattr(obj, "kind", "?"), entry.plugin, getattr(obj, "description", "")))
    return rows
