"""Tokenization in a worker pool: prompts, character limits, truncation, pairs and token-id inputs.

`tokenizers` releases the GIL inside `encode_batch`, so tokenizing one request overlaps the model
running another. Each worker thread owns a tokenizer copy because truncation is tokenizer state.
"""
from __future__ import annotations

import asyncio
import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence, Union

import numpy as np
from tokenizers import Tokenizer

from .errors import EmptyInput, TokenizerError, ValidationError

# One input: text, token ids, or a (first, second) pair for cross-encoders.
Input = Union[str, list, tuple]

CHARS_PER_TOKEN_LIMIT = 250  # TEI: an input may have at most max_input_length × 250 characters
# Below this many characters a request is tokenized on the calling thread: a worker-thread round
# trip costs more than the tokenization itself (~20 µs per short sentence).
INLINE_CHARS = 512


@dataclasses.dataclass
class Encoded:
    ids: np.ndarray  # int32 [n]
    type_ids: np.ndarray  # int32 [n]
    chars: int
    attend: int | None = None  # leading tokens attention may use as keys (models/late.py); None: all


@dataclasses.dataclass(frozen=True)
class PairTemplate:
    """A family's prompt around each (query, document) pair, for rerankers that read one rendered text
    (Qwen3-Reranker: models/families/decoder.PROMPT_TEMPLATE). It is tokenized without the tokenizer's
    special tokens (the template writes its own), in three parts: `prefix` and `suffix` are never cut;
    `middle` (with {instruction}, {query} and {document}, the document last) is cut to fit, the
    document first, as the official code cuts it (it truncates the middle's tokens from the end)."""

    prefix: str
    middle: str
    suffix: str
    instruction: str  # the default instruction

    def encode(self, tok: Tokenizer, fixed: tuple[list[int], list[int]], query: str, document: str,
               instruction: str | None, limit: int, truncate: bool, direction: str) -> list[int]:
        head = self.middle.format(instruction=instruction or self.instruction, query=query, document="")
        enc = tok.encode(head + document, add_special_tokens=False)
        middle = enc.ids
        budget = limit - len(fixed[0]) - len(fixed[1])
        if len(middle) > budget:
            if not truncate:
                total = len(middle) + len(fixed[0]) + len(fixed[1])
                raise ValidationError(f"`inputs` must have less than {limit} tokens. Given: {total}")
            # The first token holding a document character (its space may start inside the head).
            doc_start = next((i for i, (_, end) in enumerate(enc.offsets) if end > len(head)), len(middle))
            if direction == "left" and doc_start <= budget:
                middle = middle[:doc_start] + middle[len(middle) - (budget - doc_start):]
            else:
                middle = middle[:max(budget, 0)]
        return fixed[0] + middle + fixed[1]

    def fixed(self, tok: Tokenizer) -> tuple[list[int], list[int]]:
        """The prefix's and the suffix's tokens: the same for every pair of a request."""
        return (tok.encode(self.prefix, add_special_tokens=False).ids,
                tok.encode(self.suffix, add_special_tokens=False).ids)


@dataclasses.dataclass(frozen=True)
class TokenizeOptions:
    truncate: bool
    direction: str = "right"  # "right" | "left"
    prompt: str | None = None
    # For pairs: "only_second" cuts the document, never the query (falls back when the query alone is too long).
    pair_strategy: str = "longest_first"
    # Rerankers that read pairs through a prompt template; `instruction` fills its {instruction}.
    template: PairTemplate | None = None
    instruction: str | None = None
    # Token limit for this call instead of the model's (--auto-chunk tokenizes whole inputs, then windows them).
    limit: int | None = None


class TokenizerPool:
    def __init__(self, tokenizer_json: str, workers: int, max_input_length: int):
        self._json = tokenizer_json
        self._local = threading.local()
        self.max_input_length = max_input_length
        self.max_chars = max_input_length * CHARS_PER_TOKEN_LIMIT
        self.executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="tokenizer")
        self.main = self._fresh()  # for cheap calls made from the event loop (vocab lookups)

    def _fresh(self) -> Tokenizer:
        tok = Tokenizer.from_str(self._json)
        tok.no_padding()
        tok.no_truncation()
        return tok

    def _tokenizer(self) -> Tokenizer:
        tok = getattr(self._local, "tok", None)
        if tok is None:
            tok = self._local.tok = self._fresh()
        return tok

    def warm(self) -> None:
        """Builds the tokenizer of the calling thread (the event loop's, for short inputs encoded
        inline) and of every worker (in the background), and runs one encode on each: building one
        from tokenizer.json costs ~30 ms, which the first request would otherwise pay."""
        workers = self.executor._max_workers
        barrier = threading.Barrier(workers)

        def build():
            barrier.wait(10)  # holds each worker until all exist, so every thread gets its own task
            self._tokenizer().encode("warm up")

        self._tokenizer().encode("warm up")
        for _ in range(workers):  # not awaited: they build beside the kernel warm-up
            self.executor.submit(build)

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def encode_async(self, inputs: Sequence[Input], opts: TokenizeOptions) -> list[Encoded]:
        if _size(inputs) <= INLINE_CHARS:
            return self.encode(inputs, opts)
        return await self.run(self.encode, inputs, opts)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ---- encode -------------------------------------------------------------------------------

    def encode(self, inputs: Sequence[Input], opts: TokenizeOptions) -> list[Encoded]:
        """Runs on a worker thread. Raises EngineError subclasses for bad input."""
        tok = self._tokenizer()
        if opts.template is not None:
            return self._encode_template(tok, inputs, opts)
        texts: list = []
        chars: list[int] = []
        for item in inputs:
            text, n = self._prepare(tok, item, opts)
            texts.append(text)
            chars.append(n)
        pairs = any(isinstance(t, tuple) for t in texts)
        limit = opts.limit or self.max_input_length
        try:
            if opts.truncate:
                strategy = opts.pair_strategy if pairs else "longest_first"
                tok.enable_truncation(limit, strategy=strategy, direction=opts.direction)
            else:
                tok.no_truncation()
            encodings = self._encode_grouped(tok, texts)
        except Exception as exc:  # tokenizers raises plain Exceptions
            if not (opts.truncate and pairs and opts.pair_strategy != "longest_first"):
                raise _encode_error(exc, texts) from None
            # The query alone exceeds the limit: cutting only the document cannot help.
            tok.enable_truncation(limit, strategy="longest_first", direction=opts.direction)
            try:
                encodings = self._encode_grouped(tok, texts)
            except Exception as exc2:
                raise _encode_error(exc2, texts) from None
        out = []
        for enc, n in zip(encodings, chars):
            ids = np.asarray(enc.ids, dtype=np.int32)
            if len(ids) > limit:
                raise ValidationError(f"`inputs` must have less than {limit} tokens. Given: {len(ids)}")
            if len(ids) == 0:
                raise EmptyInput("`inputs` cannot be empty")
            out.append(Encoded(ids, np.asarray(enc.type_ids, dtype=np.int32), n))
        return out

    def _encode_template(self, tok: Tokenizer, inputs: Sequence[Input], opts: TokenizeOptions) -> list[Encoded]:
        tok.no_truncation()
        fixed = opts.template.fixed(tok)
        out = []
        for item in inputs:
            if not isinstance(item, tuple):
                raise ValidationError("this reranker scores (query, document) pairs: send pairs, not single texts")
            query, document = item
            if not query and not document:
                raise EmptyInput("`inputs` cannot be empty")
            n = len(query) + len(document)
            if n > self.max_chars:
                if not opts.truncate:
                    raise self._too_many_chars(n)
                document = _keep(document, max(0, self.max_chars - len(query)), opts.direction)
            try:
                ids = opts.template.encode(tok, fixed, query, document, opts.instruction, self.max_input_length,
                                           opts.truncate, opts.direction)
            except ValidationError:
                raise
            except Exception as exc:  # tokenizers raises plain Exceptions
                raise _encode_error(exc, [item]) from None
            arr = np.asarray(ids, dtype=np.int32)
            out.append(Encoded(arr, np.zeros_like(arr), n))
        return out

    @staticmethod
    def _encode_grouped(tok: Tokenizer, texts: list) -> list:
        """Text recovered from token ids already has its special tokens: encode it without adding more."""
        if not any(isinstance(t, _Ids) for t in texts):
            return tok.encode_batch(texts, add_special_tokens=True)
        out: list = [None] * len(texts)
        for from_ids in (False, True):
            idx = [i for i, t in enumerate(texts) if isinstance(t, _Ids) == from_ids]
            if idx:
                encs = tok.encode_batch([str(texts[i]) for i in idx], add_special_tokens=not from_ids)
                for i, e in zip(idx, encs):
                    out[i] = e
        return out

    def _prepare(self, tok: Tokenizer, item: Input, opts: TokenizeOptions):
        """Apply the character limit and prompt; turn token ids back into text as TEI does."""
        if isinstance(item, tuple):
            first, second = item
            if not first and not second:
                raise EmptyInput("`inputs` cannot be empty")
            if opts.prompt:
                raise ValidationError("`prompt_name` cannot be set with dual inputs")
            n = len(first) + len(second)
            if n > self.max_chars:
                if not opts.truncate:
                    raise self._too_many_chars(n)
                half = self.max_chars // 2
                first, second = _keep(first, half, opts.direction), _keep(second, half, opts.direction)
            return (first, second), n
        if isinstance(item, list):  # token ids
            if not item:
                raise EmptyInput("`inputs` cannot be empty")
            vocab = tok.get_vocab_size(with_added_tokens=True)
            if any((not isinstance(i, int)) or i < 0 or i >= vocab for i in item):
                raise ValidationError(f"token ids must be integers in [0, {vocab})")
            n = len(item)
            if n > self.max_chars and not opts.truncate:
                raise self._too_many_chars(n)
            if opts.prompt:
                return opts.prompt + tok.decode(item, skip_special_tokens=True), n
            # Ids are decoded keeping special tokens and re-encoded without adding them again.
            return _Ids(tok.decode(item, skip_special_tokens=False)), n
        if not item:
            raise EmptyInput("`inputs` cannot be empty")
        n = len(item)
        if n > self.max_chars:
            if not opts.truncate:
                raise self._too_many_chars(n)
            item = _keep(item, self.max_chars, opts.direction)
        return (opts.prompt + item if opts.prompt else item), n

    def _too_many_chars(self, n: int) -> ValidationError:
        return ValidationError(f"`inputs` must have less than {self.max_chars} characters. Given: {n}")

    # ---- tokenize / decode routes ----------------------------------------------------------

    def tokenize(self, texts: Sequence[str], add_special_tokens: bool, prompt: str | None):
        tok = self._tokenizer()
        tok.no_truncation()
        out = []
        for text in texts:
            if not text:
                raise EmptyInput("`inputs` cannot be empty")
            if len(text) > self.max_chars:
                raise self._too_many_chars(len(text))
            full = prompt + text if prompt else text
            try:
                enc = tok.encode(full, add_special_tokens=add_special_tokens)
            except Exception as exc:  # tokenizers raises plain Exceptions
                raise _encode_error(exc, [full]) from None
            raw = full.encode("utf-8")
            char_to_byte = _char_to_byte_offsets(full)
            tokens = []
            for tid, special, (start, stop), piece in zip(enc.ids, enc.special_tokens_mask, enc.offsets, enc.tokens):
                if special:
                    tokens.append({"id": tid, "text": piece, "special": True, "start": None, "stop": None})
                else:
                    b0, b1 = char_to_byte[start], char_to_byte[stop]
                    tokens.append(
                        {
                            "id": tid,
                            "text": raw[b0:b1].decode("utf-8", errors="replace"),
                            "special": False,
                            "start": b0,
                            "stop": b1,
                        }
                    )
            out.append(tokens)
        return out

    def decode(self, batches: Sequence[Sequence[int]], skip_special_tokens: bool) -> list[str]:
        tok = self._tokenizer()
        vocab = tok.get_vocab_size(with_added_tokens=True)
        for ids in batches:
            if any(i < 0 or i >= vocab for i in ids):
                raise ValidationError(f"token ids must be in [0, {vocab})")
        return tok.decode_batch([list(ids) for ids in batches], skip_special_tokens=skip_special_tokens)


def appending(tokenizer_json: str, token: str) -> str:
    """The tokenizer with a post-processor that ends every text (and each text of a pair) with `token`;
    unchanged when its vocabulary lacks the token."""
    from tokenizers import processors

    tok = Tokenizer.from_str(tokenizer_json)
    token_id = tok.token_to_id(token)
    if token_id is None:
        return tokenizer_json
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A:0 {token}:0", pair=f"$A:0 {token}:0 $B:1 {token}:1", special_tokens=[(token, token_id)])
    return tok.to_str()


def _keep(text: str, n: int, direction: str) -> str:
    """The first n characters, or the last n when truncating on the left (that side is dropped)."""
    return text[-n:] if direction == "left" else text[:n]


def _encode_error(exc: Exception, texts: Sequence) -> ValidationError | TokenizerError:
    """A lone surrogate (JSON `"\\ud800"` decodes to one) is text Python holds but UTF-8 cannot
    carry, so tokenizers refuses it: that is bad input, not a tokenizer failure."""
    for text in texts:
        for part in text if isinstance(text, tuple) else (text,):
            try:
                part.encode("utf-8")
            except UnicodeEncodeError as bad:
                return ValidationError(f"`inputs` must be valid Unicode: unpaired surrogate at character {bad.start}")
    return TokenizerError(str(exc))


def _size(inputs: Sequence[Input]) -> int:
    total = 0
    for item in inputs:
        total += len(item[0]) + len(item[1]) if isinstance(item, tuple) else len(item)
    return total


class _Ids(str):
    """Text recovered from token ids: already carries its special tokens."""


def _char_to_byte_offsets(text: str) -> list[int]:
    offsets = [0] * (len(text) + 1)
    pos = 0
    for i, ch in enumerate(text):
        offsets[i] = pos
        pos += len(ch.encode("utf-8"))
    offsets[len(text)] = pos
    return offsets
