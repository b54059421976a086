"""Request bodies, as TEI defines them. Unknown fields are ignored (pydantic's default)."""
from __future__ import annotations

from typing import List, Literal, Optional, Union

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# One item is a string or a list of token ids; `inputs` is one item or a list of them.
InputItem = Union[str, List[int]]
Inputs = Union[str, List[int], List[InputItem]]
Direction = Literal["right", "left", "Right", "Left"]


class Body(BaseModel):
    """A request body. Types are strict, as TEI's serde is: `"normalize": "yes"` or `"dimensions": "8"`
    is a 422, not a guess."""

    model_config = ConfigDict(strict=True)


def items(inputs: Inputs) -> list:
    """Flatten TEI's `Input` union into a list of items (`[1, 2]` is one item of ids, not two)."""
    if isinstance(inputs, str):
        return [inputs]
    if inputs and all(isinstance(x, int) for x in inputs):
        return [list(inputs)]
    if not inputs:
        return [[]]
    return list(inputs)


class EmbedRequest(Body):
    inputs: Inputs
    truncate: Optional[bool] = None
    truncation_direction: Direction = "right"
    prompt_name: Optional[str] = None
    normalize: bool = True
    dimensions: Optional[int] = None


class EmbedAllRequest(Body):
    inputs: Inputs
    truncate: Optional[bool] = None
    truncation_direction: Direction = "right"
    prompt_name: Optional[str] = None


class OpenAIEmbedRequest(Body):
    input: Inputs
    model: Optional[str] = None
    user: Optional[str] = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = None


class TokenizeRequest(Body):
    inputs: Union[str, List[str]]
    add_special_tokens: bool = True
    prompt_name: Optional[str] = None


class DecodeRequest(Body):
    ids: Union[List[int], List[List[int]]]
    skip_special_tokens: bool = True


class SimilarityInputs(Body):
    source_sentence: str
    sentences: List[str]


class SimilarityParameters(Body):
    truncate: Optional[bool] = None
    truncation_direction: Direction = "right"
    prompt_name: Optional[str] = None


class SimilarityRequest(Body):
    inputs: SimilarityInputs
    parameters: Optional[SimilarityParameters] = Field(default=None)


async def read_json(request: Request):
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": str(exc)}]) from None


def validate(model: type[BaseModel], data) -> BaseModel:
    """Validate decoded JSON with FastAPI's error shape (for routes that pick their schema at run time)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
