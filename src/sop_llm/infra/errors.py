"""The service's error vocabulary. Everything the service raises on purpose is an `AppError`:

    AppError
    ├── BadRequestError                  400  (invalid_request)
    │   ├── PromptTooLongError           400  (prompt_too_long)
    │   ├── ContextLengthExceededError   400  (context_length_exceeded)
    │   └── UnsupportedFeatureError      400  (unsupported_feature)
    ├── RequestValidationFailed          422  (validation_error)
    ├── NotFoundError                    404
    │   └── ModelNotFoundError           404  (model_not_found)
    ├── ModelNotLoadedError              503  (model_not_loaded)
    ├── MemoryExceededError              503  (memory_exceeded)
    ├── OverloadedError                  429  (overloaded)
    ├── GenerationTimeoutError           504  (timeout)
    ├── ProviderError                    502  (provider_error)
    │   ├── ProviderNotFoundError        500  (provider_not_found)
    │   ├── ProviderNotAvailableError    503  (provider_not_available)
    │   └── ProviderInitializationError  503  (provider_initialization_failed)
    ├── JSONFixFailedError               422  (json_fix_failed)
    └── ServiceUnavailableError          503  (service_unavailable)

Foreign exceptions are translated into this tree once, where they arise (inside providers); the HTTP
handlers in `sop_llm.api.errors` turn the tree into response bodies for each API surface.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    status_code: ClassVar[int] = 500
    error_code: ClassVar[str] = "internal_error"
    openai_type: ClassVar[str] = "server_error"

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.param = param
        self.retry_after = retry_after


class BadRequestError(AppError):
    status_code = 400
    error_code = "invalid_request"
    openai_type = "invalid_request_error"


class PromptTooLongError(BadRequestError):
    error_code = "prompt_too_long"


class ContextLengthExceededError(BadRequestError):
    error_code = "context_length_exceeded"


class UnsupportedFeatureError(BadRequestError):
    error_code = "unsupported_feature"


class RequestValidationFailed(AppError):
    status_code = 422
    error_code = "validation_error"
    openai_type = "invalid_request_error"


class NotFoundError(AppError):
    status_code = 404
    error_code = "not_found"
    openai_type = "invalid_request_error"


class ModelNotFoundError(NotFoundError):
    error_code = "model_not_found"


class ModelNotLoadedError(AppError):
    status_code = 503
    error_code = "model_not_loaded"
    openai_type = "server_error"


class MemoryExceededError(AppError):
    status_code = 503
    error_code = "memory_exceeded"
    openai_type = "server_error"


class OverloadedError(AppError):
    status_code = 429
    error_code = "overloaded"
    openai_type = "rate_limit_error"


class GenerationTimeoutError(AppError):
    status_code = 504
    error_code = "timeout"
    openai_type = "timeout_error"


class ProviderError(AppError):
    status_code = 502
    error_code = "provider_error"
    openai_type = "server_error"


class ProviderNotFoundError(ProviderError):
    status_code = 500
    error_code = "provider_not_found"


class ProviderNotAvailableError(ProviderError):
    status_code = 503
    error_code = "provider_not_available"


class ProviderInitializationError(ProviderError):
    status_code = 503
    error_code = "provider_initialization_failed"


class JSONFixFailedError(AppError):
    status_code = 422
    error_code = "json_fix_failed"
    openai_type = "invalid_request_error"


class ServiceUnavailableError(AppError):
    status_code = 503
    error_code = "service_unavailable"
    openai_type = "server_error"
