"""Engine errors carry TEI's error type; the HTTP and gRPC layers map it to a status code."""
from __future__ import annotations


class EngineError(Exception):
    kind = "Backend"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ValidationError(EngineError):
    kind = "Validation"

    def __init__(self, detail: str, prefixed: bool = True):
        super().__init__(f"Input validation error: {detail}" if prefixed else detail)


class EmptyInput(ValidationError):
    """TEI's `Empty`: reported as a validation failure (422) so clients see one family of input errors."""


class BatchTooLarge(ValidationError):
    def __init__(self, size: int, limit: int):
        super().__init__(f"batch size {size} > maximum allowed batch size {limit}", prefixed=False)


class TokenizerError(EngineError):
    kind = "Tokenizer"

    def __init__(self, detail: str):
        super().__init__(f"tokenizer error {detail}")


class Overloaded(EngineError):
    kind = "Overloaded"

    def __init__(self):
        super().__init__("Model is overloaded")


class BackendError(EngineError):
    kind = "Backend"

    def __init__(self, detail: str):
        super().__init__(f"Backend error: {detail}")


class WrongModelType(BackendError):
    pass


class UnknownModel(EngineError):
    """A request named a model this server does not serve (several models in one process)."""

    kind = "NotFound"

    def __init__(self, name: str, served: list[str]):
        super().__init__(f"The model `{name}` does not exist. Served models: {', '.join(served)}")
        self.name = name
        self.served = served
