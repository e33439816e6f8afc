"""Wire models of POST /v1/responses. Unknown fields are tolerated (clients send many); known ones are checked, and
what this service cannot do (built-in tools, images, background runs, …) is refused with a 400 that says so."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sop_llm.infra.errors import BadRequestError, UnsupportedFeatureError
from sop_llm.providers.types import MAX_TOKENS_BOUND, JsonMode

TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


M = TypeVar("M", bound=Tolerant)


class TextFormat(Tolerant):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    def to_json_mode(self) -> JsonMode | None:
        if self.type == "text":
            return None
        if self.type == "json_schema":
            if self.schema_ is None:
                raise BadRequestError(
                    "text.format.schema is required when text.format.type is json_schema", param="text.format.schema"
                )
            return JsonMode(self.schema_)
        return JsonMode(None)

    def echo(self) -> dict[str, Any]:
        if self.type != "json_schema":
            return {"type": self.type}
        echoed: dict[str, Any] = {"type": "json_schema", "name": self.name or "response", "schema": self.schema_}
        echoed["strict"] = self.strict
        if self.description is not None:
            echoed["description"] = self.description
        return echoed


class TextConfig(Tolerant):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class FunctionTool(Tolerant):
    type: Literal["function"]
    name: str = Field(pattern=TOOL_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponseCreateRequest(Tolerant):
    model: str | None = Field(None, description="a model name or alias; the default model when left out")
    input: str | list[dict[str, Any]] = Field(
        description="a user message, or a list of items: messages (roles user, assistant, system, developer; "
        "content a string or input_text/output_text parts), function_call and function_call_output items"
    )
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = Field(None, description="function tools: {type: function, name, parameters}")
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_BOUND)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    metadata: dict[str, str] | None = Field(None, description="at most 16 pairs; keys ≤ 64, values ≤ 512 characters")
    store: bool = True
    previous_response_id: str | None = None
    stream: bool = False
    truncation: Literal["auto", "disabled"] | None = Field(
        None, description="only 'disabled': a conversation that does not fit the model is refused, never cut"
    )
    background: bool | None = Field(None, description="background responses are not supported")
    fallbacks: list[str] | None = Field(None, description="non-standard: models to try in order if this one fails")

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            if len(value) > 16:
                raise ValueError("at most 16 key-value pairs")
            for key, item in value.items():
                if len(key) > 64 or len(item) > 512:
                    raise ValueError(f"key '{key[:64]}': keys may have 64 characters, values 512")
        return value

    def check_supported(self) -> None:
        """Refuse request fields of OpenAI's that name something this service does not have."""
        for field in ("conversation", "prompt"):
            if getattr(self, field, None) is not None:
                raise UnsupportedFeatureError(
                    f"{field}: not supported by this service; send the conversation as input items, or continue a "
                    "stored response with previous_response_id",
                    param=field,
                )
        if self.background:
            raise UnsupportedFeatureError(
                "background: background responses are not supported; stream the response instead (stream: true)",
                param="background",
            )
        if self.truncation == "auto":
            raise UnsupportedFeatureError(
                "truncation: 'auto' is not supported; a conversation that does not fit the model's context is "
                "refused, never cut. Leave it out, or send 'disabled'",
                param="truncation",
            )
        if self.previous_response_id is not None and not self.previous_response_id.startswith("resp_"):
            raise BadRequestError(
                f"previous_response_id: '{self.previous_response_id[:80]}' is not a response id (they begin with "
                "'resp_')",
                param="previous_response_id",
            )

    def text_format(self) -> TextFormat:
        return self.text.format if self.text and self.text.format else TextFormat(type="text")

    def function_tools(self) -> list[FunctionTool]:
        tools = []
        for index, tool in enumerate(self.tools or []):
            kind = tool.get("type")
            if kind != "function":
                raise UnsupportedFeatureError(
                    f"tools[{index}]: '{kind}' tools are not supported by this service; only function tools "
                    "({type: function, name, parameters})",
                    param=f"tools[{index}]",
                )
            if "function" in tool and "name" not in tool:
                raise BadRequestError(
                    f"tools[{index}]: this is the Chat Completions shape; the Responses API takes name, description "
                    "and parameters at the top level: {type: function, name, parameters}",
                    param=f"tools[{index}]",
                )
            tools.append(validated(FunctionTool, tool, f"tools[{index}]"))
        return tools


def validated(model: type[M], value: dict[str, Any], where: str) -> M:
    """`model` from `value`; a mismatch is a 400 that names the place (`input[2].call_id: Field required`)."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        place = ".".join([where, *(str(p) for p in first["loc"])])
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise BadRequestError(f"{place}: {first['msg']}{more}", param=place) from None
