"""Structured output: token masks from llguidance grammars (JSON Schema, regex, choices, Lark), per request.

A request names at most one output format (`response_format`, `regex`, `choices`, `grammar`).
`OutputFormat` is that choice in canonical form; it compiles (once per tokenizer and format,
cached) into an llguidance matcher. Every sequence being decoded gets its own
`GrammarConstraint` (a copy of the compiled matcher): nothing is written into the shared
tokenizer or model, so one decoding step may hold rows with different grammars.

The per-sequence interface, used by the static decoding loop and the batching engine alike:

    allowed()        -> bool [V]: tokens the grammar admits next (EOS only where it accepts)
    mask(scores)     -> scores [V] with every other token at -inf
    advance(token)   consume the chosen token (False if the grammar rejects it)
    is_complete()    the grammar is satisfied and nothing but EOS may follow: stop now
    fork()           an independent copy (beam search, n samples from one prompt)

`RowConstraints` holds one GrammarConstraint per row of a batch and is a Processor
(ids, scores) -> scores, so it sits first in the processor chain.
"""

from __future__ import annotations

import functools
import json
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from taskhub.errors import ParamError

if TYPE_CHECKING:
    import llguidance
    import numpy as np
    import torch

FORMAT_FIELDS = ("response_format", "regex", "choices", "grammar")
JSON_OPTIONS = {"whitespace_flexible": False}  # compact JSON: {"a":1,"b":[2,3]}; a model cannot ramble in spaces
CACHE_SIZE = 256  # compiled grammars kept (least recently used dropped)
EXPECTED_RESPONSE_FORMAT = (
    '{"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}, '
    '{"type": "text"}, a bare JSON Schema or a pydantic model class'
)


@dataclass(frozen=True)
class OutputFormat:
    """One request's output constraint in canonical form (hashable: the compile cache key)."""

    kind: Literal["json", "regex", "choices", "grammar"]
    source: str  # JSON Schema text (property order kept: it is the output order), regex, choices as a JSON list, or Lark/GBNF grammar text
    model: Any = None  # a pydantic model class: `parsed` is then an instance of it

    @property
    def is_json(self) -> bool:
        return self.kind == "json"

    def grammar(self) -> str:
        """The llguidance grammar text of this format."""
        import llguidance

        if self.kind == "json":
            return llguidance.LLMatcher.grammar_from_json_schema(self.source, overrides=JSON_OPTIONS)
        if self.kind == "regex":
            return llguidance.LLMatcher.grammar_from_regex(self.source)
        if self.kind == "choices":
            return llguidance.LLMatcher.grammar_from_lark(
                "start: " + " | ".join(json.dumps(c) for c in json.loads(self.source))
            )
        return llguidance.grammar_from("grammar", self.source)  # Lark, or GBNF converted to Lark

    def shape(self, text: str, finish_reason: str) -> dict[str, Any]:
        """The extra result fields: {"parsed"} for JSON formats, and {"error"} (None when all is well)."""
        out: dict[str, Any] = {"parsed": None} if self.is_json else {}
        if finish_reason == "length":
            out["error"] = "max_new_tokens cut the output before the grammar was complete; raise max_new_tokens"
            return out
        if self.kind == "choices" and text not in json.loads(self.source):
            out["error"] = f"the output {text!r} is not one of the choices (a stop string cut it?)"
            return out
        out["error"] = None
        if self.is_json:
            try:
                value = json.loads(text)
                out["parsed"] = self.model.model_validate(value) if self.model is not None else value
            except ValueError as exc:  # json.JSONDecodeError and pydantic's ValidationError are ValueErrors
                out["error"] = f"the output is not valid JSON of the requested shape (a stop string cut it?): {exc}"
        return out


def _pydantic_model(value: Any) -> Any:
    """`value` if it is a pydantic model class, else None."""
    from pydantic import BaseModel

    return value if isinstance(value, type) and issubclass(value, BaseModel) else None


OPENAI_TYPES = ("text", "json_object", "json_schema")
JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}
SCHEMA_KEYWORDS = {"$schema", "properties", "items", "anyOf", "oneOf", "allOf", "$ref", "enum", "const"}


def _is_bare_schema(value: Any) -> bool:
    """A JSON Schema given directly instead of OpenAI's {"type": "json_schema", ...} wrapper."""
    if not isinstance(value, dict):
        return False
    kind = value.get("type")
    if isinstance(kind, list):
        return all(k in JSON_TYPES for k in kind)
    return kind in JSON_TYPES or (kind is None and bool(SCHEMA_KEYWORDS & set(value)))


def _closed(schema: Any) -> Any:
    """A pydantic model's schema with additionalProperties false on every object that does not say otherwise:
    the model would drop extra keys anyway, so generating them only wastes tokens."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _closed(value) for key, value in schema.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _json_format(response_format: Any) -> OutputFormat | None:
    """OpenAI's response_format (or a pydantic class) as an OutputFormat; None for {"type": "text"}."""
    model = _pydantic_model(response_format)
    if model is not None:
        return OutputFormat("json", json.dumps(_closed(model.model_json_schema())), model)
    if _is_bare_schema(response_format):  # `--param response_format=@schema.json` with the schema alone
        return OutputFormat("json", json.dumps(response_format))
    if not isinstance(response_format, dict) or response_format.get("type") not in OPENAI_TYPES:
        raise ParamError(f"response_format must be {EXPECTED_RESPONSE_FORMAT}; got {response_format!r}")
    kind = response_format["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputFormat("json", json.dumps({"type": "object"}))
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise ParamError(
            'response_format {"type": "json_schema"} needs "json_schema": {"name": ..., "schema": {...}}, '
            f"with the JSON Schema object under schema; got {spec!r}"
        )
    return OutputFormat("json", json.dumps(schema))


def output_format(params: Any) -> OutputFormat | None:
    """The output format a request asks for (an object with the FORMAT_FIELDS), None for free text.

    Checks the shape of the parameters only; `check_format` also compiles the grammar.
    """
    given = [name for name in FORMAT_FIELDS if getattr(params, name, None) is not None]
    if len(given) > 1:
        raise ParamError(f"Give at most one of {', '.join(FORMAT_FIELDS)}; got {', '.join(given)}.")
    if not given:
        return None
    name = given[0]
    value = getattr(params, name)
    if name == "response_format":
        return _json_format(value)
    if name == "choices":
        if not value or not all(isinstance(c, str) and c for c in value):
            raise ParamError(f"choices must be a non-empty list of non-empty strings; got {value!r}")
        return OutputFormat("choices", json.dumps(list(value)))
    if not isinstance(value, str) or not value:
        raise ParamError(f"{name} must be a non-empty string; got {value!r}")
    return OutputFormat("regex" if name == "regex" else "grammar", value)


def _problem(fmt: OutputFormat, message: str) -> ParamError:
    what = {"json": "JSON Schema", "regex": "regex", "choices": "choices", "grammar": "grammar"}[fmt.kind]
    return ParamError(f"Invalid {what} for structured output: {message.strip()}")


@functools.lru_cache(maxsize=CACHE_SIZE)
def check_format(fmt: OutputFormat) -> None:
    """Compile `fmt` without a tokenizer: a ParamError naming the problem if the library rejects it."""
    import llguidance

    try:
        grammar = fmt.grammar()
    except ValueError as exc:
        raise _problem(fmt, str(exc)) from None
    error = llguidance.LLMatcher.validate_grammar(grammar)
    if error and not error.startswith("WARNING"):
        raise _problem(fmt, error)


class _Compiled:
    """llguidance tokenizers per HF tokenizer and compiled matchers per (tokenizer, format): an LRU."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tokenizers: weakref.WeakKeyDictionary[Any, dict[int, llguidance.LLTokenizer]] = weakref.WeakKeyDictionary()
        # (id of the llguidance tokenizer, format) -> (that tokenizer, compiled matcher); holding the tokenizer
        # keeps its id from being reused while the entry lives
        self.matchers: OrderedDict[tuple[int, OutputFormat], tuple[Any, llguidance.LLMatcher]] = OrderedDict()

    def tokenizer(self, tokenizer: Any, vocab_size: int) -> llguidance.LLTokenizer:
        """The llguidance view of a (fast) HF tokenizer, built once (it walks the whole vocabulary)."""
        import llguidance.hf

        per_vocab = self.tokenizers.setdefault(tokenizer, {})
        if vocab_size not in per_vocab:
            if not getattr(tokenizer, "is_fast", False):
                raise ParamError("Structured output needs a fast (tokenizers-library) tokenizer; this model has none.")
            per_vocab[vocab_size] = llguidance.hf.from_tokenizer(tokenizer, n_vocab=max(vocab_size, len(tokenizer)))
        return per_vocab[vocab_size]

    def matcher(self, tokenizer: Any, vocab_size: int, fmt: OutputFormat) -> llguidance.LLMatcher:
        """A fresh matcher of `fmt` at its start state; compiled once, then copied."""
        import llguidance

        with self.lock:
            lltok = self.tokenizer(tokenizer, vocab_size)
            key = (id(lltok), fmt)
            if key in self.matchers:
                self.matchers.move_to_end(key)
                return self.matchers[key][1].deep_copy()
        try:
            grammar = fmt.grammar()
        except ValueError as exc:
            raise _problem(fmt, str(exc)) from None
        template = llguidance.LLMatcher(lltok, grammar, log_level=0)
        if template.is_error():
            raise _problem(fmt, template.get_error())
        with self.lock:
            self.matchers[key] = (lltok, template)
            while len(self.matchers) > CACHE_SIZE:
                self.matchers.popitem(last=False)
        return template.deep_copy()


COMPILED = _Compiled()


class GrammarConstraint:
    """One sequence's grammar state: which tokens may come next, advanced token by token."""

    def __init__(
        self, matcher: llguidance.LLMatcher, lltokenizer: llguidance.LLTokenizer, finish_ids: list[int]
    ) -> None:
        self.matcher = matcher
        self.width = lltokenizer.vocab_size  # bits in a mask
        self.eos_id = lltokenizer.eos_token  # llguidance's EOS: its bit says "the grammar accepts here"
        self.finish_ids = finish_ids  # the request's EOS / stop ids: allowed exactly where the grammar accepts

    @classmethod
    def start(cls, fmt: OutputFormat, tokenizer: Any, finish_ids: list[int], vocab_size: int) -> GrammarConstraint:
        """A constraint at the start of `fmt` (compiled or taken from the cache); ParamError if invalid.

        `vocab_size` is the model's (its logits may be wider than the tokenizer).
        """
        matcher = COMPILED.matcher(tokenizer, vocab_size, fmt)
        return cls(matcher, COMPILED.tokenizer(tokenizer, vocab_size), finish_ids)

    def fork(self) -> GrammarConstraint:
        """An independent copy at the same state."""
        twin = object.__new__(GrammarConstraint)
        twin.__dict__.update(self.__dict__, matcher=self.matcher.deep_copy())
        return twin

    def fill_bitmask(self, bitmask: np.ndarray, row: int = 0) -> None:
        """Write the allowed-token bits (32 per int32 word) into `bitmask[row]` ([B, ceil(width / 32)] int32)."""
        import llguidance.numpy

        llguidance.numpy.fill_next_token_bitmask(self.matcher, bitmask, row)

    def allowed(self, vocab_size: int) -> torch.Tensor:
        """bool [vocab_size]: the tokens the grammar admits next."""
        import llguidance.numpy

        bitmask = llguidance.numpy.allocate_token_bitmask(1, self.width)
        self.fill_bitmask(bitmask)
        return unpack_bitmask(bitmask, vocab_size, [self])[0]

    def mask(self, scores: torch.Tensor) -> torch.Tensor:
        """`scores` [V] (or [1, V]) with every token the grammar forbids at -inf."""
        return apply_mask(scores, self.allowed(scores.shape[-1]).view_as(scores))

    def advance(self, token_id: int) -> bool:
        """Consume the chosen token; False if the grammar does not admit it (the matcher then stays in error).

        A finish id (EOS, a stop token) is not consumed: it ends the sequence, fine where the grammar accepts.
        """
        if token_id in self.finish_ids:
            return bool(self.matcher.is_accepting())
        return bool(self.matcher.consume_token(token_id))

    def is_complete(self) -> bool:
        """The grammar is satisfied and only EOS may follow (or the matcher failed): decoding should stop."""
        return bool(self.matcher.is_stopped())

    def is_accepting(self) -> bool:
        """The output so far is a complete match (more tokens may still be allowed)."""
        return bool(self.matcher.is_accepting())

    @property
    def error(self) -> str | None:
        """Why the matcher failed (a token outside the grammar was forced), or None."""
        return self.matcher.get_error() if self.matcher.is_error() else None


def unpack_bitmask(bitmask: np.ndarray, vocab_size: int, rows: list[GrammarConstraint]) -> torch.Tensor:
    """[B, W] int32 bit words -> bool [B, vocab_size] (ids past the mask never allowed), with
    llguidance's EOS bit moved to each row's finish ids.

    All in numpy (one thread, no torch dispatch): on a busy machine a few small torch ops per step
    cost more than the mask itself.
    """
    import numpy as np
    import torch

    width = min(rows[0].width, vocab_size)
    bits = np.unpackbits(bitmask.view(np.uint8), axis=1, count=width, bitorder="little")  # word w bit i -> 32w + i
    allowed = bits.view(np.bool_)
    if width < vocab_size:
        allowed = np.pad(allowed, ((0, 0), (0, vocab_size - width)))
    for b, row in enumerate(rows):
        if row.eos_id < width:
            accepts = bool(allowed[b, row.eos_id])
            allowed[b, row.eos_id] = False
            if row.finish_ids:
                allowed[b, row.finish_ids] = accepts
    return torch.from_numpy(allowed)


def apply_mask(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """`scores` with the tokens not `allowed` (bool, CPU, same shape) at -inf; numpy for CPU scores."""
    import numpy as np
    import torch

    if scores.device.type == "cpu" and scores.dtype == torch.float32:
        return torch.from_numpy(np.where(allowed.numpy(), scores.numpy(), np.float32(-np.inf)))
    return scores.where(allowed.to(scores.device), float("-inf"))


class RowConstraints:
    """One GrammarConstraint per row of a batch, as the first Processor (ids, scores) -> scores."""

    def __init__(self, rows: list[GrammarConstraint]) -> None:
        import llguidance.numpy

        self.rows = rows
        self.initial = rows[0].fork()  # the start state, for replaying finished sequences
        self.bitmask = llguidance.numpy.allocate_token_bitmask(len(rows), rows[0].width)

    @classmethod
    def start(
        cls, fmt: OutputFormat, tokenizer: Any, rows: int, finish_ids: list[int], vocab_size: int
    ) -> RowConstraints:
        first = GrammarConstraint.start(fmt, tokenizer, finish_ids, vocab_size)
        return cls([first] + [first.fork() for _ in range(rows - 1)])

    def __call__(self, ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Mask every row of `scores` [B, V]; rows whose grammar is complete are left as they are."""
        self.bitmask.fill(-1)
        for b, row in enumerate(self.rows):
            if not row.is_complete():
                row.fill_bitmask(self.bitmask, b)
        allowed = unpack_bitmask(self.bitmask, scores.shape[1], self.rows)
        return apply_mask(scores, allowed)

    def advance(self, next_ids: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """Consume each active row's chosen token ([B] ids, [B] bool)."""
        flags = active.tolist() if active is not None else [True] * len(self.rows)
        for row, token, on in zip(self.rows, next_ids.tolist(), flags):
            if on and not row.is_complete():
                row.advance(token)

    def completed(self) -> list[bool]:
        """Per row: the grammar is complete (or failed), nothing but EOS can follow."""
        return [row.is_complete() for row in self.rows]

    def completes(self, origins: list[int], tokens: list[int]) -> list[bool]:
        """Per candidate: would row origins[i] followed by tokens[i] complete its grammar (beam search)."""
        out = []
        for origin, token in zip(origins, tokens):
            twin = self.rows[origin].fork()
            out.append(twin.advance(token) and twin.is_complete())
        return out

    def complete_sequence(self, ids: list[int]) -> bool:
        """Whether `ids`, from the start, complete the grammar (why a finished beam ended)."""
        replay = self.initial.fork()
        return all(replay.advance(token) for token in ids) and replay.is_complete()

    def reorder(self, origins: list[int]) -> None:
        """Row i continues from row origins[i] (beam search): copies where a row is taken twice."""
        taken: set[int] = set()
        rows = []
        for origin in origins:
            row = self.rows[origin]
            rows.append(row.fork() if origin in taken else row)
            taken.add(origin)
        self.rows = rows


def constraint_for(
    config: Any, tokenizer: Any, rows: int, vocab_size: int, finish_ids: list[int]
) -> RowConstraints | None:
    """The constraint of a request whose config names an output format, else None."""
    fmt = output_format(config)
    if fmt is None:
        return None
    if tokenizer is None:
        raise ParamError("Structured output needs the model's tokenizer.")
    return RowConstraints.start(fmt, tokenizer, rows, finish_ids, vocab_size)
