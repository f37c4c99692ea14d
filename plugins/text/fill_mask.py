"""fill-mask stages: find the mask tokens, score the vocabulary there, list the best fillers as HF does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from taskhub import StageContext
from taskhub.errors import BadInputError, ParamError, TaskhubError

from .forward import forward_rows
from .params import FillParams
from .tokenize import Encoded, TokenizeParams, encode_texts


@dataclass
class Masked:
    """A tokenized text and where its mask tokens are."""

    encoded: Encoded
    positions: list[int]

    def __len__(self) -> int:
        return len(self.encoded)

    sort_length = property(__len__)  # the explicit key the core sorts batches by


def mask_token_id(ctx: StageContext) -> int:
    tokenizer = ctx.model.tokenizer
    if tokenizer.mask_token_id is None:
        raise TaskhubError(f"The tokenizer of {ctx.model_id!r} has no mask token; fill-mask needs a masked LM.")
    return int(tokenizer.mask_token_id)


def tokenize_masked(items: list[Any], params: TokenizeParams, ctx: StageContext) -> list[Masked]:
    """Each text must hold at least one mask token within the model's context."""
    mask_id = mask_token_id(ctx)
    results = []
    for index, encoded in enumerate(encode_texts(items, ctx.model, params.max_length)):
        positions = [i for i, token in enumerate(encoded.input_ids) if token == mask_id]
        if not positions:
            raise BadInputError(
                f"Input {index} has no mask token {ctx.model.tokenizer.mask_token!r} "
                "(within the model's context); fill-mask needs one where the word to guess goes."
            )
        results.append(Masked(encoded, positions))
    return results


@dataclass
class MaskProbs:
    masked: Masked
    probs: torch.Tensor  # [num_masks, vocab]: softmax over the vocabulary at each mask


def mask_probs(items: list[Masked], params: BaseModel, ctx: StageContext) -> list[MaskProbs]:
    """Only the mask positions' rows leave the batch (a full [T, vocab] per input would be large)."""
    probs = forward_rows(
        [item.encoded for item in items],
        ctx,
        lambda out, row, i: out.logits[row, items[i].positions].softmax(dim=-1).float().cpu(),
    )
    return [MaskProbs(item, p) for item, p in zip(items, probs)]


def target_ids(tokenizer: Any, targets: list[str]) -> np.ndarray:
    """Vocabulary ids of the targets, as transformers resolves them (first token of an unknown word)."""
    vocab = tokenizer.get_vocab()
    ids = []
    for target in targets:
        token_id = vocab.get(target)
        if token_id is None:
            pieces = tokenizer(
                target,
                add_special_tokens=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                max_length=1,
                truncation=True,
            )["input_ids"]
            if not pieces:
                continue
            token_id = pieces[0]
        ids.append(token_id)
    ids = list(set(ids))
    if not ids:
        raise ParamError(f"None of the targets {targets!r} maps to a token of the model's vocabulary.")
    return np.array(ids)


def fill_candidates(items: list[MaskProbs], params: FillParams, ctx: StageContext) -> list[list[Any]]:
    """`[{"score", "token", "token_str", "sequence"}]` per input; a list of such lists with several masks."""
    tokenizer = ctx.model.tokenizer
    targets = target_ids(tokenizer, params.targets) if params.targets is not None else None
    top_k = min(params.top_k, len(targets)) if targets is not None else params.top_k
    results = []
    for item in items:
        probs = item.probs if targets is None else item.probs[..., targets]
        values, predictions = probs.topk(min(top_k, probs.shape[-1]))  # a top_k beyond the vocabulary: all of it
        single = len(item.masked.positions) == 1
        per_mask = []
        for position, mask_values, mask_predictions in zip(
            item.masked.positions, values.tolist(), predictions.tolist()
        ):
            row = []
            for score, p in zip(mask_values, mask_predictions):
                token = int(targets[p]) if targets is not None else p
                ids = np.array(item.masked.encoded.input_ids)
                ids[position] = token
                ids = ids[ids != tokenizer.pad_token_id]
                sequence = tokenizer.decode(ids.tolist(), skip_special_tokens=single)
                row.append(
                    {"score": score, "token": token, "token_str": tokenizer.decode([token]), "sequence": sequence}
                )
            per_mask.append(row)
        results.append(per_mask[0] if single else per_mask)
    return results
