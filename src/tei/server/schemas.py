"""Request bodies, as TEI defines them. Unknown fields are ignored (pydantic's default)."""
from __future__ import annotations

from typing import List, Literal, Optional, Union

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

# One item is a string or a list of token ids; `inputs` is one item or a list of them.
InputItem = Union[str, List[int]]
Inputs = Union[str, List[int], List[InputItem]]
Direction = Literal["right", "left", "Right", "Left"]


def items(inputs: Inputs) -> list:
    """Flatten TEI's `Input` union into a list of items (`[1, 2]` is one item of ids, not two)."""
    if isinstance(inputs, str):
        return [inputs]
    if inputs and all(isinstance(x, int) for x in inputs):
        return [list(inputs)]
    if not inputs:
        return [[]]
    return list(inputs)


class EmbedRequest(BaseModel):
    inputs: Inputs
    truncate: Optional[bool] = None
    truncation_direction: Direction = "right"
    prompt_name: Optional[str] = None
    normalize: bool = True
    dimensions: Optional[int] = None


class EmbedAllRequest(BaseModel):
    inputs: Inputs
    truncate: Optional[bool] = None
    truncation_direction: Direction = "right"
    prompt_name: Optional[str] = None


class OpenAIEmbedRequest(BaseModel):
    input: Inputs
    model: Optional[str] = None
    user: Optional[str] = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = None


class TokenizeRequest(BaseModel):
    inputs: Union[str, List[str]]
    add_special_tokens: bool = True
    prompt_name: Optional[str] = None


class DecodeRequest(BaseModel):
    ids: Union[List[int], List[List[int]]]
    skip_special_tokens: bool = True


class SimilarityInputs(BaseModel):
    source_sentence: str
    sentences: List[str]


class SimilarityParameters(BaseModel):
    truncate: Optional[bool] = None
    truncation_direction: Direction = "right"
    prompt_name: Optional[str] = None


class SimilarityRequest(BaseModel):
    inputs: SimilarityInputs
    parameters: Optional[SimilarityParameters] = Field(default=None)


async def parse_body(model: type[BaseModel], request: Request) -> BaseModel:
    """Validate a body by hand (routes that pick their schema at run time) with FastAPI's error shape."""
    raw = await request.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": str(exc)}]) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
