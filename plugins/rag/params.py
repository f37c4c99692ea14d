"""The params models of the rag plugin's stages: pydantic only, no torch, so registering and validating a
manifest stay cheap."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from taskhub_textgen.api import GenerationConfig

from .prompt import DEFAULT_TEMPLATE


class RetrievalParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: str | None = Field(None, description="Index folder, or a bare name under $TASKHUB_HOME/indexes (required)")
    top_k: int = Field(5, ge=1, le=1000, description="Passages returned per query")
    filter: dict[str, Any] | None = Field(
        None, description="Metadata equality filter: {key: value} or {key: [any, of, these]}"
    )
    hybrid: bool = Field(False, description="Fuse dense and BM25 rankings with reciprocal-rank fusion")
    search: Literal["auto", "exact", "ann"] = Field(
        "auto", description="exact: brute-force cosine; ann: the IVF index; auto: ann when the index has one"
    )


class AnswerOptions(BaseModel):
    """What the answer stage adds to the decoding controls."""

    model_config = ConfigDict(extra="forbid")
    num_sentences: int = Field(3, ge=1, le=50, description="Extractive: most sentences in the answer")
    min_relevance: float = Field(
        0.5, ge=0.0, le=1.0, description="Extractive: keep sentences scoring at least this fraction of the best one"
    )
    prompt_template: str = Field(DEFAULT_TEMPLATE, description="Generative: the prompt, with {passages} and {question}")
    chat: bool | None = Field(
        None,
        description="Generative: send the prompt as a chat message (default: if the tokenizer has a chat template)",
    )
    stream: bool = Field(False, description="Generative: an iterator of text deltas; .result has the answer once done")
    sample_top_k: int = Field(0, ge=0, description="Generative: the decoder's top_k sampling (top_k is the passages)")


def _control(name: str) -> Any:
    """A decoding control as an answer param: declared here for routing, validated by GenerationConfig itself."""
    f = GenerationConfig.model_fields[name]
    default = 256 if name == "max_new_tokens" else f.default
    if f.default_factory is not None:
        return (Any, Field(default_factory=f.default_factory, description=f.description))
    return (Any, Field(default, description=f.description))


# Every decoding control of the text-generation task except top_k, which here counts passages (see sample_top_k).
AnswerParams = create_model(
    "AnswerParams",
    __base__=AnswerOptions,
    **{name: _control(name) for name in GenerationConfig.model_fields if name != "top_k"},
)


class IndexDocumentsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: str | None = Field(None, description="Index folder, or a bare name under $TASKHUB_HOME/indexes (required)")
    chunker: Literal["tokens", "sentences", "markdown"] | None = Field(
        None, description="Default: the index's, else tokens"
    )
    chunk_tokens: int | None = Field(None, ge=1, description="Default: the index's, else 256")
    overlap: int | None = Field(None, ge=0, description="Default: the index's, else 32")
    dtype: Literal["float32", "bfloat16"] | None = Field(
        None, description="Encoder weights when embedding: the index's, else float32 (bfloat16 is faster on AMX CPUs)"
    )
