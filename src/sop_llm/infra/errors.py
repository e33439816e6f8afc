"""The service's error vocabulary. Everything the service raises on purpose is an `AppError`:

    AppError
    ├── BadRequestError                  400  (invalid_request)
    │   ├── PromptTooLongError           400  (prompt_too_long)
    │   ├── ContextLengthExceededError   400  (context_length_exceeded)
    │   ├── UnsupportedFeatureError      400  (unsupported_feature)
    │   ├── ModelTooLargeError           400  (model_too_large)
    │   ├── ModelChoiceError             400  (invalid_model_choice)
    │   └── UnsupportedModelError        400  (unsupported_model)
    ├── RequestValidationFailed          422  (validation_error)
    ├── NotFoundError                    404
    │   ├── ModelNotFoundError           404  (model_not_found)
    │   └── HubRepoNotFoundError         404  (repository_not_found)
    ├── ConflictError                    409  (conflict)
    ├── ModelNotLoadedError              503  (model_not_loaded)                    retryable
    ├── MemoryExceededError              503  (memory_exceeded)                     retryable
    ├── OverloadedError                  429  (overloaded)                          retryable
    ├── GenerationTimeoutError           504  (timeout)                             retryable
    ├── ProviderError                    502  (provider_error)                      retryable
    │   ├── ProviderNotFoundError        500  (provider_not_found)
    │   ├── ProviderNotAvailableError    503  (provider_not_available)              retryable
    │   ├── ProviderInitializationError  503  (provider_initialization_failed)      retryable
    │   ├── ProviderRateLimitError       429  (provider_rate_limited)               retryable
    │   ├── ProviderTimeoutError         504  (provider_timeout)                    retryable
    │   ├── ProviderAuthError            502  (provider_auth_failed)
    │   ├── ProviderBadRequestError      400  (provider_bad_request)
    │   └── CircuitOpenError             503  (circuit_open)                        retryable
    ├── JSONFixFailedError               422  (json_fix_failed)
    ├── DownloadError                    502  (download_failed)
    │   └── ChecksumMismatchError        502  (checksum_mismatch)
    ├── InsufficientStorageError         507  (insufficient_storage)
    └── ServiceUnavailableError          503  (service_unavailable)

`retryable` errors let ModelRouter retry or fall back to the next deployment; the others are returned as they are.
Foreign exceptions are translated into this tree once, where they arise (inside providers); the HTTP
handlers in `sop_llm.api.errors` turn the tree into response bodies for each API surface.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    status_code: ClassVar[int] = 500
    error_code: ClassVar[str] = "internal_error"
    openai_type: ClassVar[str] = "server_error"
    retryable: ClassVar[bool] = False
    # Keys of `details` that also go into the OpenAI-shaped body (which otherwise has only its four fields).
    openai_details: ClassVar[tuple[str, ...]] = ()

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


class ModelTooLargeError(BadRequestError):
    """The model would need more memory than MODEL_MEMORY_BUDGET allows even with every other model unloaded."""

    error_code = "model_too_large"


class ModelChoiceError(BadRequestError):
    """A pull names no model of the repository, or more than one: `details["choices"]` lists what it holds."""

    error_code = "invalid_model_choice"
    openai_details = ("choices",)


class UnsupportedModelError(BadRequestError):
    """A hub repository holds nothing this service can serve (no GGUF, sentence-transformers or cross-encoder)."""

    error_code = "unsupported_model"


class PayloadTooLargeError(AppError):
    status_code = 413
    error_code = "payload_too_large"
    openai_type = "invalid_request_error"


class RequestValidationFailed(AppError):
    status_code = 422
    error_code = "validation_error"
    openai_type = "invalid_request_error"


class AuthenticationError(AppError):
    status_code = 401
    error_code = "unauthorized"
    openai_type = "invalid_request_error"


class ForbiddenError(AppError):
    status_code = 403
    error_code = "forbidden"
    openai_type = "invalid_request_error"


class NotFoundError(AppError):
    status_code = 404
    error_code = "not_found"
    openai_type = "invalid_request_error"


class ModelNotFoundError(NotFoundError):
    error_code = "model_not_found"


class HubRepoNotFoundError(NotFoundError):
    """The model hub has no repository of that name (or hides a private one from us)."""

    error_code = "repository_not_found"


class ConflictError(AppError):
    status_code = 409
    error_code = "conflict"
    openai_type = "invalid_request_error"


class ModelNotLoadedError(AppError):
    status_code = 503
    error_code = "model_not_loaded"
    openai_type = "server_error"
    retryable = True


class MemoryExceededError(AppError):
    status_code = 503
    error_code = "memory_exceeded"
    openai_type = "server_error"
    retryable = True


class OverloadedError(AppError):
    status_code = 429
    error_code = "overloaded"
    openai_type = "rate_limit_error"
    retryable = True


class RateLimitedError(AppError):
    status_code = 429
    error_code = "rate_limited"
    openai_type = "rate_limit_error"
    retryable = True


class BudgetExceededError(AppError):
    """A caller's token budget for the day or month is used up; `retry_after` is the time until it resets."""

    status_code = 429
    error_code = "budget_exceeded"
    openai_type = "insufficient_quota"


class GenerationTimeoutError(AppError):
    status_code = 504
    error_code = "timeout"
    openai_type = "timeout_error"
    retryable = True


class ProviderError(AppError):
    status_code = 502
    error_code = "provider_error"
    openai_type = "server_error"
    retryable = True


class ProviderNotFoundError(ProviderError):
    status_code = 500
    error_code = "provider_not_found"
    retryable = False


class ProviderNotAvailableError(ProviderError):
    status_code = 503
    error_code = "provider_not_available"


class ProviderInitializationError(ProviderError):
    status_code = 503
    error_code = "provider_initialization_failed"


class ProviderRateLimitError(ProviderError):
    status_code = 429
    error_code = "provider_rate_limited"
    openai_type = "rate_limit_error"


class ProviderTimeoutError(ProviderError):
    status_code = 504
    error_code = "provider_timeout"
    openai_type = "timeout_error"


class ProviderAuthError(ProviderError):
    """The upstream refused our credentials: a configuration problem of this service, not of the caller."""

    status_code = 502
    error_code = "provider_auth_failed"
    retryable = False


class ProviderBadRequestError(ProviderError):
    """The upstream refused the request itself; another deployment would refuse it too."""

    status_code = 400
    error_code = "provider_bad_request"
    openai_type = "invalid_request_error"
    retryable = False


class CircuitOpenError(ProviderError):
    status_code = 503
    error_code = "circuit_open"


class JSONFixFailedError(AppError):
    status_code = 422
    error_code = "json_fix_failed"
    openai_type = "invalid_request_error"
    openai_details = ("attempts",)


class DownloadError(AppError):
    """Fetching a model from the hub failed: the hub answered with an error or the connection kept breaking."""

    status_code = 502
    error_code = "download_failed"
    openai_type = "server_error"


class ChecksumMismatchError(DownloadError):
    """A downloaded file's bytes do not hash to what the hub says they are; the file was deleted."""

    error_code = "checksum_mismatch"


class InsufficientStorageError(AppError):
    status_code = 507
    error_code = "insufficient_storage"
    openai_type = "server_error"


class ServiceUnavailableError(AppError):
    status_code = 503
    error_code = "service_unavailable"
    openai_type = "server_error"
