"""Stages of the retrieval, retrieval-augmented-generation and index-documents tasks, and the documents batch reader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from taskhub_textgen.api import GenerationConfig

from taskhub import StageContext
from taskhub.batch import Item
from taskhub.errors import BadInputError, ParamError

from .answer import DEFAULT_TEMPLATE, Retrieved, check_template, extractive_answer, generative_answers
from .build import IndexWriter, find_documents, read_document
from .embedder import get_embedder
from .search import FUSION_DEPTH, check_filter, get_searcher, reciprocal_rank_fusion


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


def required_index(index: str | None) -> str:
    if not index:
        raise ParamError("index is required: the folder or bare name of an index built with `taskhub index build`")
    return index


def _check_queries(items: list[Any]) -> list[str]:
    for index, query in enumerate(items):
        if not isinstance(query, str) or not query.strip():
            raise BadInputError(f"Query {index} is {query!r}; expected a non-empty string.")
    return items


def retrieve(
    queries: list[str], params: RetrievalParams, model: str | None, device: str | None
) -> tuple[Any, list[list[dict[str, Any]]]]:
    """(embedder, passages per query): dense top-k, or RRF of dense and BM25 top candidates."""
    searcher = get_searcher(required_index(params.index))
    card = searcher.store.card
    card.check_model(model, None if model is None else card.revision, searcher.store.path)
    embedder = get_embedder(card.model, card.revision, device)
    where = check_filter(params.filter)
    vectors = embedder.embed(queries)
    snap = searcher.snapshot()
    if not params.hybrid:
        ranked = searcher.dense(vectors, params.top_k, where, params.search, snap)
    else:
        depth = max(FUSION_DEPTH, 5 * params.top_k)
        dense = searcher.dense(vectors, depth, where, params.search, snap)
        ranked = [
            reciprocal_rank_fusion([d, searcher.bm25(q, depth, where, snap)], params.top_k)
            for q, d in zip(queries, dense)
        ]
    return embedder, [[snap.passage(row, score) for row, score in hits] for hits in ranked]


def retrieval(items: list[Any], params: RetrievalParams, ctx: StageContext) -> list[Any]:
    """Stage `rag.retrieve`: top-k passages per query; `model=` may only name the index's own embedding model."""
    _, passages = retrieve(_check_queries(items), params, ctx.model_id, ctx.device)
    return passages


def retrieve_for_answer(items: list[Any], params: RetrievalParams, ctx: StageContext) -> list[Retrieved]:
    """Stage `rag.retrieve_passages`: passages per question (the task's `model` is the generator, not the embedder)."""
    embedder, passages = retrieve(_check_queries(items), params, None, ctx.device)
    return [Retrieved(q, p, embedder) for q, p in zip(items, passages)]


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
OPTIONS = set(AnswerOptions.model_fields)


def answer(items: list[Retrieved], params: Any, ctx: StageContext) -> list[Any]:
    """Stage `rag.answer`: extractive without a model, generated by `model` through the text-generation task otherwise."""
    if ctx.model_id is None:
        return [extractive_answer(item, params.num_sentences, params.min_relevance) for item in items]
    check_template(params.prompt_template)
    controls = params.model_dump(include=params.model_fields_set - OPTIONS)
    controls["max_new_tokens"] = params.max_new_tokens
    if "sample_top_k" in params.model_fields_set:
        controls["top_k"] = params.sample_top_k
    try:
        GenerationConfig.model_validate(controls)
    except ValidationError as exc:
        raise ParamError(f"Invalid decoding controls: {exc}") from None
    return generative_answers(
        items, ctx.model_id, ctx.device, params.prompt_template, params.chat, controls, params.stream
    )


class IndexDocumentsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: str | None = Field(None, description="Index folder, or a bare name under $TASKHUB_HOME/indexes (required)")
    chunker: Literal["tokens", "sentences", "markdown"] | None = Field(
        None, description="Default: the index's, else tokens"
    )
    chunk_tokens: int | None = Field(None, ge=1, description="Default: the index's, else 256")
    overlap: int | None = Field(None, ge=0, description="Default: the index's, else 32")


def index_documents(items: list[Any], params: IndexDocumentsParams, ctx: StageContext) -> list[Any]:
    """Stage `rag.index_documents` (the index-documents job): add each {"doc_id", "path"} document to the index."""
    chosen = {
        k: v for k, v in params.model_dump(include={"chunker", "chunk_tokens", "overlap"}).items() if v is not None
    }
    writer = IndexWriter(required_index(params.index), model=ctx.model_id, chunking=chosen, device=ctx.device)
    pending, out = [], []
    for item in items:
        if not isinstance(item, dict) or not {"doc_id", "path"} <= item.keys():
            raise BadInputError(f"expected a document record {{'doc_id', 'path'}}, got {item!r}")
        doc = read_document(str(item["doc_id"]), Path(item["path"]))
        status = "unchanged" if writer.is_current(doc) else ("replaced" if doc.doc_id in writer.hashes else "added")
        chunks = [] if status == "unchanged" else writer.chunks(doc)
        if chunks:
            pending.append((doc, chunks))
        out.append({"doc_id": doc.doc_id, "status": status, "chunks": len(chunks)})
    if pending:
        writer.write(pending)
    return out


def read_documents(location: Path, inputs: Any) -> Iterator[Item]:
    """Batch reader `documents`: one item per file of the glob, as {"doc_id", "path"} (ids as `taskhub index build` makes them)."""
    for doc_id, path in find_documents([str(location)]):
        yield Item(doc_id, str(path), {"doc_id": doc_id, "path": str(path)})
