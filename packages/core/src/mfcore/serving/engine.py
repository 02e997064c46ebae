"""The serving engine: one thread owns the model and runs a continuous decode batch.

Slots are the rows of one static KV cache (max_batch rows, cache_length columns). Waiting requests join
between two decode steps, as many as there are free slots (up to `pack_length` prompt tokens at once):
their prompts are packed end to end into ONE row and prefilled together, in chunks, through the batch-1
prompt graph (`_pack`: each token sees only the earlier tokens of its own prompt, rotary positions
counted per prompt; each prompt's last-token hidden state kept, `forward_with_cache(hidden_at=)`, and the
output head run once over all of them, or the logits read in each chunk, `logits_at`, for a model without
`hidden_at`). The matmuls see every waiting token at
once, so sixteen prompts cost one pass over the weights per chunk, not sixteen (an idle engine first waits
a moment for the requests sent with the first one, `_gather_arrivals`). A small compiled graph
(`_insert`) then copies each prompt's keys and values from the packed row into its slot's row, real
tokens in columns 0..n-1. Then they decode with every other active row, one token per step:
each row has its own position, write column (cache_slot (B, 1, T, 1)) and visible columns
(attention_bias (B, 1, 1, T)), so rows of different lengths share one compiled decode graph per row
bucket (the first 1, 2, 4, ... max_batch slots: slots are taken lowest first, so one request runs a
1-row step, not a max_batch one). A request leaves when it stops, is cancelled or its client goes away,
and its slot is free for the next one. Nothing recompiles while serving: `warm_up` compiles the insert
graph, the decode graph of every row bucket, the prompt graph of every chunk width and the head of every
row bucket at start (`compiled_shapes` counts them). A model without packing support (no cache kernel, a
prefix, no `logits_at`) prefills one prompt at a time through a batch-1 prompt graph per length bucket
instead.

The next token is chosen on the host from each row's logits with the request's own settings and its
own seeded generator (mfcore.generation.sampling, the functions `generate` uses), so a seeded request
gives the same tokens whatever else is in the batch: no row's numbers depend on another's. Where the
row bucket differs (one row runs the fused one-row kernels, several rows a matmul) the logits differ in
the last float32 bits (~1e-6), so only an exact near-tie between two tokens could choose otherwise. (16-bit
and int8 weights round the activations to bfloat16 at every row count on AVX512_BF16 CPUs, one row too.)

Prompt log-probabilities (echo + logprobs, what lm-eval scores with) come from a third graph: the
full forward of one prompt, log-softmax, the log-probability of each next token and the top 5.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from mfcore.generation.config import GenerationConfig
from mfcore.generation.decoding import DEFAULT_PREFILL_CHUNK, bucket_length, prefill_chunk
from mfcore.generation.packed_rows import PackedRows, supports_packed_rows
from mfcore.generation.sampling import next_tokens

logger = logging.getLogger(__name__)

TOP_LOGPROBS = 5  # the most alternatives per token the API returns (OpenAI's limit for completions)
DEFAULT_GATHER_MS = 40.0  # an idle engine waits this long after each arrival for the next (_gather_arrivals)
GATHER_ROUNDS = 8  # ... and at most this many times as long in all
GATHER_SHARE = 0.05  # ... or, for a large pack, this share of the prefill it is about to run (and twice it in all)


@dataclass
class SamplingParams:
    """What one sequence is generated with (already validated by the API layer)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: Optional[int] = None
    stop: List[str] = field(default_factory=list)
    stop_token_ids: List[int] = field(default_factory=list)
    logprobs: Optional[int] = None  # alternatives per generated token (0: only the chosen token's)
    prompt_logprobs: bool = False  # echo: log-probabilities of the prompt tokens too

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class TokenEvent:
    """One generated token as the client sees it: its id, the text it adds (held back while it might
    begin a stop string or an unfinished UTF-8 character) and its log-probabilities when asked."""

    token_id: int
    text: str
    logprob: Optional[float] = None
    top: Optional[List[tuple]] = None  # [(token id, logprob)] best first


class Sequence_:
    """One choice being generated: prompt, settings, the tokens so far and where it stands."""

    def __init__(self, prompt_ids: Sequence[int], params: SamplingParams, emit: Callable[[str, object], None]):
        self.prompt_ids = [int(t) for t in prompt_ids]
        self.params = params
        self.emit = emit  # emit(kind, payload): "token" TokenEvent, "prompt" logprobs, "done" reason, "error" text
        self.generated: List[int] = []
        self.tokens_out = 0  # tokens the model produced, a stop token included (usage counts them)
        self.text = ""  # the generated text, cut at a stop string
        self.sent = 0  # characters of text already handed out
        self.cancelled = False
        self.finished = False
        self.submitted = time.monotonic()
        self.first_token_at: Optional[float] = None
        self.rng = np.random.default_rng(params.seed)
        self.config = GenerationConfig(do_sample=not params.greedy, temperature=params.temperature or 1.0,
                                       top_k=params.top_k or None, top_p=params.top_p,
                                       repetition_penalty=params.repetition_penalty)
        # slot state while decoding
        self.slot: Optional[int] = None
        self.position = 0  # rotary position of the next token fed
        self.column = 0  # cache column the next token is written to

    def cancel(self) -> None:
        """Called from any thread (the client went away): the engine frees the slot before its next step."""
        self.cancelled = True


class Engine:
    """Owns the model on one thread; `submit` sequences from any thread, events come back through
    each sequence's `emit` (called on the engine thread)."""

    def __init__(self, model, tokenizer, max_batch: int = 8, max_model_len: Optional[int] = None,
                 use_jit: bool = True, warmup: bool = True, prefill_chunk_size: Optional[int] = None,
                 gather_ms: float = DEFAULT_GATHER_MS):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = int(max_batch)
        seq_length = int(getattr(model.config, "seq_length", 0) or 2048)
        self.max_model_len = int(max_model_len or min(seq_length, 2048))
        self.cache_length = -(-self.max_model_len // 16) * 16
        self.vocab_size = int(model.config.vocab_size)
        self.use_jit = use_jit
        self.prefill_chunk_size = prefill_chunk_size  # None: generate's default for the model
        if gather_ms < 0:
            raise ValueError(f"gather_ms must be >= 0, got {gather_ms}")
        self.gather_s = gather_ms / 1000.0  # an idle engine's wait for requests sent together (_gather_arrivals)
        self.prefill_s_per_token: Optional[float] = None  # measured on the packed prefills served so far
        self.packing = supports_packed_rows(model)  # packed prefill: several prompts in one row
        if self.packing:
            size = {None: DEFAULT_PREFILL_CHUNK, 0: self.cache_length}.get(prefill_chunk_size, prefill_chunk_size)
            self.chunk = 1 << (int(size).bit_length() - 1)  # a power of two divides every longer bucket
            # The packed row's columns: the most prompt tokens prefilled at once (and at least one whole prompt).
            self.pack_length = bucket_length(max(self.cache_length, 8 * self.chunk))
        self.pad_id = int(model.generation_config.pad_token_id or 0)
        self.slots: List[Optional[Sequence_]] = [None] * self.max_batch
        self.pending: collections.deque = collections.deque()
        self.lock = threading.Condition()
        self.compiled_shapes: Dict[str, set] = collections.defaultdict(set)
        self.stats = collections.Counter()  # prompt_tokens, generation_tokens, steps, ...
        self.ttft: List[float] = []  # seconds to the first token, the latest requests (metrics)
        self.recent_tokens: collections.deque = collections.deque(maxlen=4096)  # (time, tokens) per step
        # decode row buckets: powers of two below max_batch, then max_batch
        self.row_buckets = [1 << i for i in range(self.max_batch.bit_length()) if 1 << i < self.max_batch]
        self.row_buckets.append(self.max_batch)
        self._decode_graphs: Dict[int, Callable] = {}
        self._build_graphs()
        self._caches = self._zero_caches(self.max_batch)
        # Decode writes the slots' caches in place where the model's kernel can and the runtime allows it.
        self.in_place = self.model.decodes_leading_rows() and self._in_place_works()
        self._packed_caches = self._zero_caches(1, self.pack_length) if self.packing else None
        self.pack_in_place = False
        if self.packing:  # chunks write the packed caches in place where decode does and the model can
            in_place = self.in_place and self.model.writes_chunks_in_place() and self._pack_in_place_works()
            if not in_place:
                self._packed_caches = self._zero_caches(1, self.pack_length)
                self._caches = self._zero_caches(self.max_batch)
                self._build_pack_step(False)
        # host copies of the per-row decode inputs
        self._ids = np.full((self.max_batch, 1), self.pad_id, dtype=np.int32)
        self._positions = np.zeros((self.max_batch, 1), dtype=np.int32)
        self._visible = np.zeros((self.max_batch, self.cache_length), dtype=bool)
        self._stopping = False
        if warmup:
            self.warm_up()
        self.thread = threading.Thread(target=self._loop, name="mfcore-engine", daemon=True)
        self.thread.start()

    # -- graphs ------------------------------------------------------------------------------------
    def _build_graphs(self) -> None:
        import mindspore
        from mindspore import mint, ops

        model = self.model
        jit = mindspore.jit if self.use_jit else (lambda f: f)

        # Two functions, not one jitted twice: MindSpore warns "compiled again" for a reused function object,
        # and that warning is what a recompile looks like (tests count it).
        def prompt_step(input_ids, position_ids, attention_bias, cache_slot, *caches):
            return model.forward_with_cache(input_ids, position_ids, attention_bias, cache_slot, *caches)

        def insert(row, order, *caches):
            """Row `row` (B, 1, 1, 1) bool of the big caches <- the batch-1 caches taken in column `order`
            (T,) (the prompt's real tokens first)."""
            half = len(caches) // 2
            return tuple(mint.where(row, ops.gather(small, order, 2), big)
                         for small, big in zip(caches[:half], caches[half:]))

        def score(input_ids, targets):
            """Log-probability of each target (the next token) and the best TOP_LOGPROBS, per position."""
            logprobs = ops.log_softmax(model(input_ids), -1)
            chosen = mint.gather(logprobs, -1, targets.expand_dims(-1)).squeeze(-1)
            values, indices = ops.topk(logprobs, TOP_LOGPROBS)
            return chosen, values, indices

        self._prompt_step = jit(prompt_step)
        self._jit = jit
        self._insert, self._score = jit(insert), jit(score)

    def _build_pack_step(self, in_place: bool) -> None:
        """The packed prefill's graphs: the chunk step and the copy of each prompt into its slot. in_place:
        they write the packed caches and the slot caches given, not new ones: each chunk copied all 32 packed
        caches, and each insert all 32 slot caches (256 MB at 1.5B with 16 slots), into fresh pages."""
        import mindspore
        from mindspore import mint, ops

        from mfcore.kernels import decode_kernels

        model = self.model
        kernels = decode_kernels()
        float32_caches = all(dtype == mindspore.float32 for _, dtype in model.kv_cache_shapes(1, 16))
        cache_insert = None
        if kernels is not None and float32_caches:
            cache_insert = kernels.cache_insert_in_place if in_place else kernels.cache_insert
        elif in_place:
            raise ValueError("an in-place packed prefill needs mfcore's cache kernels and float32 caches")
        self.pack_in_place = in_place

        # Where the model can, the chunks return their prompts' last hidden states and the output head runs
        # once per pack (`head`), not on `wanted` positions of every chunk (16 rows of each 128-token chunk:
        # ~4% of a 16-prompt prefill at 1.5B).
        self.head_once = bool(getattr(model, "supports_hidden_at", False))
        at = "hidden_at" if self.head_once else "logits_at"

        def pack_step(input_ids, position_ids, attention_bias, cache_slot, positions, *caches):
            out = model.forward_with_cache(input_ids, position_ids, attention_bias, cache_slot, *caches,
                                           in_place=in_place, **{at: positions})
            return (out[0].astype(mindspore.float32),) + out[1:]  # hidden states leave the graph in float32

        def head(hidden):
            return model.logits(hidden)

        def insert_packed(columns, rows, *caches):
            """Slots where `rows` (B,) is True <- columns of the packed row: column j of slot b takes packed
            column columns[b, j] ((B, T) int32). One kernel per cache where there is one (MindSpore's gather,
            transpose and select below took ~1 s per prefill at 1.5B with 16 slots)."""
            half = len(caches) // 2
            if cache_insert is not None:
                return tuple(cache_insert(packed, big, columns, rows) for packed, big in zip(caches[:half], caches[half:]))
            new = []
            for packed, big in zip(caches[:half], caches[half:]):
                taken = ops.gather(packed[0], columns.reshape(-1), 1)  # (kv heads, B * T, head dim)
                taken = taken.reshape(packed.shape[1], big.shape[0], big.shape[2], big.shape[3]).transpose(1, 0, 2, 3)
                new.append(mint.where(rows.reshape(-1, 1, 1, 1), taken, big))
            return tuple(new)

        self._pack_step, self._insert_packed = self._jit(pack_step), self._jit(insert_packed)
        self._head = self._jit(head)

    def _pack_in_place_works(self) -> bool:
        """Whether the packed prefill's in-place writes reach the packed caches and the slot caches (as
        _in_place_works asks for decode): a one-token pack inserted into slot 0 (free: any prompt there
        later writes its column 0 again) must leave its key in column 0 of both. Where they do not, the
        packed prefill copies the caches."""
        try:
            self._build_pack_step(True)
            self._prefill_packed([[self.pad_id]], insert_into=[0])
            return _column_0_written(self._packed_caches) and _column_0_written(self._caches)
        except Exception:  # noqa: BLE001 - the copying path always works
            return False

    def _decode_graph(self, rows: int):
        """The decode step over the first `rows` slots (a row bucket): few requests do not pay for a full
        batch. The caches stay whole: a model that decodes_leading_rows takes them as they are; for another
        the graph reads their first rows and writes them back in place of the old ones (slicing and joining
        32 caches of 16 slots costs ~170 ms a step at 1.5B)."""
        if rows not in self._decode_graphs:
            from mindspore import mint

            model, whole = self.model, rows == self.max_batch or self.model.decodes_leading_rows()
            in_place = self.in_place  # set before any decode graph is built (_in_place_works tries True)

            def decode_step(input_ids, position_ids, attention_bias, cache_slot, *caches):
                if in_place:  # (logits,): the caches given were written
                    return model.forward_with_cache(input_ids, position_ids, attention_bias, cache_slot, *caches,
                                                    in_place=True)
                if whole:
                    return model.forward_with_cache(input_ids, position_ids, attention_bias, cache_slot, *caches)
                logits, *new = model.forward_with_cache(input_ids, position_ids, attention_bias, cache_slot,
                                                        *(c[:rows] for c in caches))
                return (logits,) + tuple(mint.cat((n, c[rows:]), dim=0) for n, c in zip(new, caches))

            self._decode_graphs[rows] = self._jit(decode_step)
        return self._decode_graphs[rows]

    def _step(self, rows: int, args) -> np.ndarray:
        """One decode call over the first `rows` slots; the logits (rows, V) as numpy."""
        from mindspore import Tensor

        self._note_shape("decode", *args)
        logits, *caches = self._decode_graph(rows)(*(Tensor(a) for a in args), *self._caches)
        if not self.in_place:
            self._caches = caches
        return logits.asnumpy()

    def _in_place_works(self) -> bool:
        """Whether the in-place decode kernel's writes reach this engine's cache tensors (MindSpore runs a
        CPU graph on its input tensors' own memory): one 1-row step writing slot 0, column 0 (never read
        before it is written again). Where they do not, decode copies the caches each step instead."""
        self.in_place = True
        slot = np.zeros((1, 1, self.cache_length, 1), dtype=bool)
        slot[0, 0, 0, 0] = True
        args = (np.full((1, 1), self.pad_id, np.int32), np.zeros((1, 1), np.int32),
                np.zeros((1, 1, 1, self.cache_length), np.float32), slot)
        try:
            self._step(1, args)
            written = _column_0_written(self._caches)
        except Exception:  # noqa: BLE001 - the copying path always works
            written = False
        if not written:
            self._decode_graphs.clear()
        self.in_place = written
        return written

    def _rows_for(self, highest_slot: int) -> int:
        return next(b for b in self.row_buckets if b > highest_slot)

    def warm_up(self) -> None:
        """Compile every row bucket's decode graph now (a step that writes no slot), and with packing the
        prompt graph of every chunk width, the insert graph (a pack of one token, inserted nowhere) and the
        output head of every row bucket, so that serving never compiles one while clients wait."""
        from mindspore import Tensor

        if self.packing:
            width = 16
            while width <= self.chunk:
                self._prefill_packed([[self.pad_id] * (width // 2 + 1)] * 1, insert_into=[])
                width *= 2
            if self.head_once:
                for rows in self.row_buckets:
                    hidden = np.zeros((rows, int(self.model.config.hidden_size)), np.float32)
                    self._note_shape("head", hidden)
                    self._head(Tensor(hidden))

        for rows in self.row_buckets:
            bias = np.zeros((rows, 1, 1, self.cache_length), dtype=np.float32)
            args = (np.zeros((rows, 1), np.int32), np.zeros((rows, 1), np.int32), bias,
                    np.zeros((rows, 1, self.cache_length, 1), dtype=bool))
            self._step(rows, args)

    def _zero_caches(self, batch: int, length: Optional[int] = None):
        from mindspore import Tensor
        import mindspore

        caches = []
        for shape, dtype in self.model.kv_cache_shapes(batch, length or self.cache_length):
            numpy_type = {mindspore.float32: np.float32, mindspore.float16: np.float16}.get(dtype)
            # Written zeros, not np.zeros' untouched pages: the pages are faulted in here, at start, not
            # by the first prefill that fills all slots (0.6 s of 16 prompts' 6 s at 1.5B, 256 MB of caches).
            caches.append(Tensor.from_numpy(np.full(shape, 0, numpy_type)) if numpy_type else
                          mindspore.ops.zeros(shape, dtype))
        return caches

    def _note_shape(self, graph: str, *arrays) -> None:
        self.compiled_shapes[graph].add(tuple(tuple(a.shape) for a in arrays))

    # -- the public side (any thread) --------------------------------------------------------------
    def submit(self, sequence: Sequence_) -> None:
        with self.lock:
            self.pending.append(sequence)
            self.lock.notify()
            logger.debug("queued: %d prompt tokens; %d waiting, %d running", len(sequence.prompt_ids),
                         len(self.pending), self.running)

    @property
    def queue_length(self) -> int:
        return len(self.pending)

    @property
    def running(self) -> int:
        return sum(s is not None for s in self.slots)

    def stop(self) -> None:
        with self.lock:
            self._stopping = True
            self.lock.notify()
        self.thread.join(timeout=30)

    # -- the engine thread -------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self.lock:
                while not self._stopping and not self.pending and not any(self.slots):
                    self.lock.wait()
                if self._stopping:
                    return
            if self.packing and not self.running:
                self._gather_arrivals()
            self._drop_cancelled()
            if self.packing:  # waiting prompts join between steps, all at once, packed into one prefill
                group = self._take_group()
                if group:
                    self._start_group(group)
            else:  # one prompt at a time: one per step while others decode, all free slots when idle
                admitted = 0
                while self.pending and None in self.slots and (admitted == 0 or not self.running):
                    with self.lock:
                        sequence = self.pending.popleft()
                    admitted += 1
                    self._guarded(sequence, self._start)
            if self.running:
                try:
                    self._decode()
                except Exception as exc:  # the model failed: every running request learns why
                    for sequence in [s for s in self.slots if s is not None]:
                        self._finish(sequence, None, error=f"generation failed: {exc}")

    def _gather_arrivals(self) -> None:
        """An idle engine's first request waits for those sent with it, so that they prefill as one pack.
        Clients that start together reach the server spread over ~0.1-0.2 s, with gaps of up to ~60 ms;
        starting on the first few made the rest wait for that whole prefill before their own (16 clients at
        1.5B: 7 prompts, 4.0 s, then the other 9, another 4.0 s; one pack of 16 took 6.0 s). Waits until no
        request has come for `gather_s` (40 ms by default; 0 turns this off) or, once a pack is large,
        for GATHER_SHARE of the time its prefill will take (prefill_s_per_token, measured), whichever is
        longer; in all at most GATHER_ROUNDS x gather_s or twice that share; never once every slot has a
        request. A lone request pays one `gather_s`. Running rows never wait: between two decode steps,
        requests gather by themselves."""
        if self.gather_s <= 0:
            return
        with self.lock:
            first = last = time.monotonic()
            count = len(self.pending)
            while not self._stopping and count < self.max_batch:
                share = GATHER_SHARE * (self.prefill_s_per_token or 0.0) * sum(
                    len(s.prompt_ids) for s in self.pending)
                quiet_until = min(last + max(self.gather_s, share), first + max(GATHER_ROUNDS * self.gather_s,
                                                                                2 * share))
                now = time.monotonic()
                if now >= quiet_until:
                    return
                self.lock.wait(quiet_until - now)  # submit() wakes it at once
                if len(self.pending) != count:
                    count, last = len(self.pending), time.monotonic()

    def _guarded(self, sequence: Sequence_, work) -> None:
        try:
            work(sequence)
        except Exception as exc:  # one request's failure is that request's only
            self._finish(sequence, None, error=f"{type(exc).__name__}: {exc}")

    def _drop_cancelled(self) -> None:
        for sequence in [s for s in self.slots if s is not None and s.cancelled]:
            self._finish(sequence, "cancelled")
        with self.lock:
            kept = [s for s in self.pending if not s.cancelled]
            dropped = len(self.pending) - len(kept)
            self.pending = collections.deque(kept)
        self.stats["cancelled_pending"] += dropped

    def _take_group(self) -> List[Sequence_]:
        """The waiting sequences that join now: in arrival order, one per free slot, up to pack_length
        prompt tokens in all."""
        group, tokens = [], 0
        with self.lock:
            while self.pending and len(group) < self.slots.count(None):
                n = len(self.pending[0].prompt_ids)
                if group and tokens + n > self.pack_length:
                    break
                group.append(self.pending.popleft())
                tokens += n
        return group

    def _before_prefill(self, sequence: Sequence_) -> bool:
        """Prompt log-probabilities if asked; False when the sequence is already done (cancelled, or
        max_tokens 0)."""
        if sequence.cancelled:
            self._finish(sequence, "cancelled")
            return False
        self.stats["prompt_tokens"] += len(sequence.prompt_ids)
        if sequence.params.prompt_logprobs:
            sequence.emit("prompt", self.prompt_logprobs(sequence.prompt_ids))
        if sequence.params.max_tokens == 0:
            self._finish(sequence, "length")
            return False
        return True

    def _start_group(self, group: List[Sequence_]) -> None:
        """The prompts of `group` packed into one prefill, each into a free slot, and their first tokens."""
        ready = []
        for sequence in group:
            try:
                if self._before_prefill(sequence):
                    ready.append(sequence)
            except Exception as exc:  # one request's failure is that request's only
                self._finish(sequence, None, error=f"{type(exc).__name__}: {exc}")
        if not ready:
            return
        free = [i for i, s in enumerate(self.slots) if s is None]
        started = time.monotonic()
        try:
            logits = self._prefill_packed([s.prompt_ids for s in ready], insert_into=free[:len(ready)])
        except Exception as exc:  # the model failed on this prefill: its requests learn why, the others go on
            for sequence in ready:
                self._finish(sequence, None, error=f"generation failed: {exc}")
            return
        self.stats["prefills"] += 1
        tokens, took = sum(len(s.prompt_ids) for s in ready), time.monotonic() - started
        self.prefill_s_per_token = took / tokens if self.prefill_s_per_token is None else (
            0.5 * self.prefill_s_per_token + 0.5 * took / tokens)
        logger.debug("prefill: %d prompts, %d tokens, %.2f s, beside %d running rows; the oldest had waited %.2f s",
                     len(ready), tokens, took, self.running,
                     started - min(s.submitted for s in ready))
        for sequence, slot, row in zip(ready, free, logits):
            self._occupy(sequence, slot)
            self._guarded(sequence, lambda s: self._accept(s, row))

    def _prefill_packed(self, prompts: List[List[int]], insert_into: List[int]) -> List[np.ndarray]:
        """Prefill `prompts` packed end to end into one row of the packed cache, in chunks of the batch-1
        prompt graph; copy prompt i's keys and values into slot insert_into[i] (columns 0..n-1); return
        each prompt's last-token logits (float32 (V,))."""
        from mindspore import Tensor

        lengths = [len(p) for p in prompts]
        total, columns = sum(lengths), self.pack_length
        # Whole chunks, then the rest in the smallest chunk width (a power of two) that holds it: every width
        # up to a chunk is compiled at start.
        rest = total % self.chunk
        widths = [self.chunk] * (total // self.chunk) + ([max(16, 1 << (rest - 1).bit_length())] if rest else [])
        width = sum(widths)
        # The prompts are tails of an empty shared part: token t sees the columns j <= t of its own prompt.
        layout = PackedRows(1, width, columns)
        layout.place(0, (), list(range(len(prompts))), prompts)
        layout.ids[0, total:] = self.pad_id
        ids, positions, seen = layout.ids[0], layout.positions[0], layout.visibility()[0]
        starts = np.asarray([at for _, at in layout.spans[0]])
        lasts = starts + np.asarray(lengths) - 1
        outputs: List[Optional[np.ndarray]] = [None] * len(prompts)  # each prompt's logits (head_once: hidden state)
        for start, chunk in zip(np.cumsum([0] + widths[:-1]), widths):
            wanted = min(self.max_batch, chunk)  # one chunk holds at most this many prompts' last tokens
            cache_slot = np.full(columns, chunk, dtype=np.int32)
            cache_slot[start:start + chunk] = np.arange(chunk)
            here = [i for i, last in enumerate(lasts) if start <= last < start + chunk]
            logits_at = np.zeros(wanted, dtype=np.int32)
            logits_at[:len(here)] = lasts[here] - start
            bias = np.where(seen[start:start + chunk], 0.0, -1e9).astype(np.float32)[None, None]
            arrays = [ids[None, start:start + chunk], positions[None, start:start + chunk], bias, cache_slot, logits_at]
            self._note_shape("prompt", *arrays)
            logits, *caches = self._pack_step(*(Tensor(a) for a in arrays), *self._packed_caches)
            if not self.pack_in_place:
                self._packed_caches = caches
            if here:
                logits = logits.asnumpy()[0]
                for k, i in enumerate(here):
                    outputs[i] = logits[k]
        if self.head_once and prompts:  # the head once, over a row bucket of the prompts' hidden states
            hidden = np.zeros((self._rows_for(len(prompts) - 1), outputs[0].shape[-1]), np.float32)
            hidden[:len(prompts)] = np.stack(outputs)
            self._note_shape("head", hidden)
            logits = self._head(Tensor(hidden)).asnumpy()
            outputs = [logits[i] for i in range(len(prompts))]
        rows = np.zeros(self.max_batch, dtype=bool)
        taken = np.zeros((self.max_batch, self.cache_length), dtype=np.int32)
        for slot, start, n in zip(insert_into, starts, lengths):
            rows[slot] = True
            taken[slot, :n] = np.arange(start, start + n)
        self._note_shape("insert", taken, rows)
        written = self._insert_packed(Tensor(taken), Tensor(rows), *self._packed_caches, *self._caches)
        if not self.pack_in_place:
            self._caches = list(written)
        return outputs

    def _occupy(self, sequence: Sequence_, slot: int) -> None:
        """The sequence's prompt is in `slot`, columns 0..n-1: it decodes from column n."""
        n = len(sequence.prompt_ids)
        sequence.slot, sequence.position, sequence.column = slot, n, n
        self.slots[slot] = sequence
        self._visible[slot] = False
        self._visible[slot, :n] = True

    def _start(self, sequence: Sequence_) -> None:
        """Prompt log-probabilities if asked, then the prompt alone into a free slot and the first token
        (models without packed prefill)."""
        from mindspore import Tensor

        if not self._before_prefill(sequence):
            return
        self.stats["prefills"] += 1
        prompt = sequence.prompt_ids
        n = len(prompt)
        width = min(bucket_length(n), self.cache_length)
        ids = np.full((1, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((1, width), dtype=np.int64)
        ids[0, width - n:], mask[0, width - n:] = prompt, 1
        # A long prompt goes through in chunks (generate's rule): MindSpore keeps a compiled graph's buffers
        # for the process's life, so a chunk's graph holds a chunk's worth, whatever the prompt length.
        chunk = prefill_chunk(self.model, GenerationConfig(prefill_chunk_size=self.prefill_chunk_size), width)
        small = self._zero_caches(1)
        for start in range(0, width, chunk):
            inputs = self.model.prepare_inputs_for_generation(ids[:, start:start + chunk], mask, self.cache_length,
                                                              start)
            arrays = [inputs[k] for k in ("input_ids", "position_ids", "attention_bias", "cache_slot")]
            self._note_shape("prompt", *arrays)
            logits, *small = self._prompt_step(*(Tensor(a) for a in arrays), *small)
        slot = self.slots.index(None)
        row = np.zeros((self.max_batch, 1, 1, 1), dtype=bool)
        row[slot] = True
        # Column j of the slot takes column j + (width - n) of the prompt cache: real tokens first.
        order = (np.arange(self.cache_length) + (width - n)) % self.cache_length
        self._note_shape("insert", row, order)
        self._caches = list(self._insert(Tensor(row), Tensor(order.astype(np.int32)), *small, *self._caches))
        self._occupy(sequence, slot)
        self._accept(sequence, logits.asnumpy()[0].astype(np.float32))

    def _decode(self) -> None:
        """One token for every active row."""
        slot_mask = np.zeros((self.max_batch, 1, self.cache_length, 1), dtype=bool)  # sliced to the row bucket
        active = [s for s in self.slots if s is not None]
        for sequence in active:
            row = sequence.slot
            self._ids[row, 0] = sequence.generated[-1]
            self._positions[row, 0] = sequence.position
            slot_mask[row, 0, sequence.column, 0] = True
            self._visible[row, sequence.column] = True
        rows = self._rows_for(max(s.slot for s in active))
        # Idle rows attend to column 0 only (finite, never read) and write nowhere.
        visible = self._visible[:rows].copy()
        visible[[s is None for s in self.slots[:rows]], 0] = True
        bias = np.where(visible, 0.0, -1e9).astype(np.float32)[:, None, None, :]
        args = (self._ids[:rows], self._positions[:rows], bias, slot_mask[:rows])
        started = time.monotonic()
        logits = self._step(rows, args)
        stepped = time.monotonic()
        self.stats["steps"] += 1
        self.recent_tokens.append((stepped, len(active)))
        for sequence in active:
            sequence.position += 1
            sequence.column += 1
            self._guarded(sequence, lambda s: self._accept(s, logits[s.slot].astype(np.float32)))
        logger.debug("decode: %d rows in a %d-row step, %.0f ms, then %.0f ms choosing and handing out tokens",
                     len(active), rows, 1000 * (stepped - started), 1000 * (time.monotonic() - stepped))

    def _accept(self, sequence: Sequence_, logits: np.ndarray) -> None:
        """Choose the next token from one row's logits, hand its text out, stop when it is time."""
        params = sequence.params
        if sequence.cancelled:
            return self._finish(sequence, "cancelled")
        seen = np.asarray([sequence.prompt_ids + sequence.generated], dtype=np.int64)
        token = int(next_tokens(logits[None], seen, sequence.config, sequence.rng)[0])
        logprob = top = None
        if params.logprobs is not None:
            logprobs = _log_softmax(logits)
            logprob = float(logprobs[token])
            if params.logprobs:
                best = np.argsort(-logprobs, kind="stable")[:params.logprobs]
                top = [(int(i), float(logprobs[i])) for i in best]
        if sequence.first_token_at is None:
            sequence.first_token_at = time.monotonic()
            self.ttft.append(sequence.first_token_at - sequence.submitted)
            del self.ttft[:-1000]
        self.stats["generation_tokens"] += 1
        sequence.tokens_out += 1
        if token in params.stop_token_ids:
            # Not part of the text, but its log-probability is handed out (as vLLM does): lm-eval's echo
            # scoring reads the prompt entries as all but the last, whatever token came after them.
            sequence.emit("token", TokenEvent(token, "", logprob, top))
            return self._finish(sequence, "stop")
        sequence.generated.append(token)
        text = self.tokenizer.decode(sequence.generated, skip_special_tokens=True)
        stopped = False
        for stop in params.stop:
            at = text.find(stop)
            if at >= 0:
                text, stopped = text[:at], True
        sequence.text = text
        # Hand out what can no longer change: not a trailing unfinished character, not the start of a stop.
        safe = len(text) if stopped else len(text) - _held_back(text, params.stop)
        delta = text[sequence.sent:safe] if safe > sequence.sent else ""
        sequence.sent = max(sequence.sent, safe)
        sequence.emit("token", TokenEvent(token, delta, logprob, top))
        if stopped:
            return self._finish(sequence, "stop")
        if len(sequence.generated) >= params.max_tokens or sequence.column >= self.cache_length:
            return self._finish(sequence, "length")

    def _finish(self, sequence: Sequence_, reason: Optional[str], error: Optional[str] = None) -> None:
        if sequence.finished:
            return
        sequence.finished = True
        if sequence.slot is not None and self.slots[sequence.slot] is sequence:
            self.slots[sequence.slot] = None
        if error is not None:
            self.stats["errors"] += 1
            sequence.emit("error", error)
            return
        if reason not in ("cancelled",) and sequence.sent < len(sequence.text):
            sequence.emit("token", TokenEvent(-1, sequence.text[sequence.sent:]))  # the held-back tail
            sequence.sent = len(sequence.text)
        sequence.emit("done", reason)

    # -- prompt scoring ----------------------------------------------------------------------------
    def prompt_logprobs(self, prompt_ids: Sequence[int]):
        """[(logprob of token i given tokens < i, [(id, logprob)] * TOP_LOGPROBS)] for i >= 1, on the
        engine thread (the model's owner). Right padding: the causal forward never looks ahead."""
        from mindspore import Tensor

        n = len(prompt_ids)
        width = max(bucket_length(n), 16)
        ids = np.full((1, width), self.pad_id, dtype=np.int32)
        ids[0, :n] = prompt_ids
        targets = np.zeros((1, width), dtype=np.int32)
        targets[0, :n - 1] = prompt_ids[1:]
        self._note_shape("score", ids)
        chosen, values, indices = (t.asnumpy() for t in self._score(Tensor(ids), Tensor(targets)))
        return [(float(chosen[0, i]), list(zip(indices[0, i].tolist(), values[0, i].astype(float).tolist())))
                for i in range(n - 1)]


def _column_0_written(caches) -> bool:
    """Whether row 0 of the first cache holds something in column 0 (the in-place checks write a key there)."""
    return bool(np.abs(caches[0].asnumpy()[0, :, 0]).sum() > 0)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of text that must wait: an unfinished UTF-8 character (decoded as U+FFFD),
    or the longest suffix that begins one of the stop strings (the next token may complete it)."""
    if text.endswith("\ufffd"):
        return len(text) - len(text.rstrip("\ufffd"))
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest
