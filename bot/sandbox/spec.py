"""Checks every Bot API call against the machine-readable spec in ``botapi_spec.json``.

The data file keeps only facts from the public Bot API spec (method and field names, types,
required flags, the fixed ``type`` value of each union member). Telegram itself is lenient about
unknown parameters; the sandbox is strict on purpose, so a typo or a parameter the Bot API does
not have fails in tests instead of being silently ignored in production.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.sandbox.errors import ApiError

SPEC_PATH = Path(__file__).with_name("botapi_spec.json")

_INTEGER = re.compile(r"^-?\d{1,20}$")
_FLOAT = re.compile(r"^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_TRUE_WORDS = frozenset({"true", "1"})
_FALSE_WORDS = frozenset({"false", "0"})
_TYPE_LABELS = {
    "InlineKeyboardButton": "inline keyboard button",
    "InlineKeyboardMarkup": "inline keyboard markup",
    "ReplyKeyboardMarkup": "reply keyboard markup",
    "KeyboardButton": "keyboard button",
}


class UploadedFile:
    """Marks a parameter that arrived as a multipart file part."""

    def __init__(
        self, filename: str | None, content: bytes = b"", content_type: str | None = None
    ) -> None:
        self.filename = filename
        self.content = content
        self.content_type = content_type


@dataclass(frozen=True)
class FieldSpec:
    """One parameter or object field: the types it may take and whether it must be there."""

    types: tuple[str, ...]
    required: bool
    const: str | None = None


@dataclass(frozen=True)
class TypeSpec:
    """An object type: its fields, or the concrete types it stands for."""

    fields: Mapping[str, FieldSpec]
    subtypes: tuple[str, ...] = ()


class _FieldError(Exception):
    """A problem inside a JSON object; worded at the parameter that carried it."""

    def __init__(self, detail: str, type_name: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.type_name = type_name


def _field(raw: list[Any]) -> FieldSpec:
    const = raw[2] if len(raw) > 2 else None
    return FieldSpec(types=tuple(raw[0]), required=bool(raw[1]), const=const)


class BotApiSpec:
    """The Bot API's methods and parameter types, and the checks built on them."""

    def __init__(
        self,
        version: str,
        methods: Mapping[str, Mapping[str, FieldSpec]],
        types: Mapping[str, TypeSpec],
    ) -> None:
        self.version = version
        self.methods = methods
        self.types = types
        self._by_lower = {name.lower(): name for name in methods}

    @classmethod
    def load(cls, path: Path = SPEC_PATH) -> BotApiSpec:
        data = json.loads(path.read_text(encoding="utf-8"))
        methods = {
            name: {param: _field(raw) for param, raw in params.items()}
            for name, params in data["methods"].items()
        }
        types = {
            name: TypeSpec(
                fields={field: _field(raw) for field, raw in entry.get("fields", {}).items()},
                subtypes=tuple(entry.get("subtypes", ())),
            )
            for name, entry in data["types"].items()
        }
        return cls(str(data["version"]), methods, types)

    def canonical_method(self, name: str) -> str | None:
        """The spec's spelling of a method; Telegram matches method names case-insensitively."""
        return self._by_lower.get(name.lower())

    def check_call(self, method: str, raw: Mapping[str, object]) -> dict[str, Any]:
        """Parameters converted to Python values, or ApiError(400) worded like Telegram."""
        params = self.methods[method]
        for name in raw:
            if name not in params:
                raise ApiError.bad_request(f'unknown parameter "{name}" for method {method}')
        checked: dict[str, Any] = {}
        for name, spec in params.items():
            value = raw.get(name)
            if value is None or value == "":
                if spec.required:
                    raise ApiError.bad_request(_missing(name))
                continue
            try:
                checked[name] = self._top_value(name, value, spec.types)
            except _FieldError as error:
                label = _TYPE_LABELS.get(error.type_name, error.type_name)
                raise ApiError.bad_request(f"can't parse {label}: {error.detail}") from None
        return checked

    def _top_value(self, name: str, value: object, types: tuple[str, ...]) -> Any:
        if isinstance(value, UploadedFile):
            if "InputFile" in types:
                return value
            raise ApiError.bad_request(f'parameter "{name}" must not be a file')
        structured = [kind for kind in types if kind not in _SCALARS]
        if structured and isinstance(value, str) and value[:1] in ("{", "["):
            try:
                value = json.loads(value)
            except ValueError:
                raise ApiError.bad_request(f"can't parse {name} JSON object") from None
        for kind in types:
            converted = _scalar(kind, value)
            if converted is not _NO_MATCH:
                return converted
        if structured:
            return self._structured(name, value, tuple(structured))
        raise ApiError.bad_request(f'parameter "{name}" must be of type {" or ".join(types)}')

    def _structured(self, name: str, value: object, types: tuple[str, ...]) -> Any:
        arrays = [kind for kind in types if kind.startswith("Array of ")]
        if isinstance(value, list) and arrays:
            return self._value(value, arrays[0], f'Parameter "{name}"', arrays[0])
        objects = [kind for kind in types if not kind.startswith("Array of ")]
        if isinstance(value, dict) and objects:
            return self._best_object(value, tuple(objects))
        raise ApiError.bad_request(f"can't parse {name} JSON object")

    def _best_object(self, value: dict[str, Any], choices: tuple[str, ...]) -> dict[str, Any]:
        if len(choices) == 1:
            return self._object(value, choices[0])

        def fit(kind: str) -> tuple[int, int]:
            fields = self.types[kind].fields
            has_required = all(key in value for key, spec in fields.items() if spec.required)
            return (int(has_required), sum(1 for key in value if key in fields))

        return self._object(value, max(choices, key=fit))

    def _value(self, value: object, kind: str, where: str, owner: str) -> Any:
        """``value`` checked as ``kind``; ``owner`` names the object that holds it, for errors."""
        if kind.startswith("Array of "):
            if not isinstance(value, list):
                raise _FieldError(f"{where} must be an Array", owner)
            inner = kind[len("Array of ") :]
            return [self._value(item, inner, where, owner) for item in value]
        converted = _scalar(kind, value)
        if converted is not _NO_MATCH:
            return converted
        if kind in self.types:
            if not isinstance(value, dict):
                raise _FieldError(f"{_TYPE_LABELS.get(kind, kind)} must be an Object", owner)
            return self._object(value, kind)
        raise _FieldError(f"{where} must be of type {kind}", owner)

    def _object(self, value: dict[str, Any], kind: str) -> dict[str, Any]:
        spec = self.types[kind]
        if spec.subtypes:
            return self._object(value, self._subtype(value, kind, spec))
        checked: dict[str, Any] = {}
        for key in value:
            if key not in spec.fields:
                raise _FieldError(f'Unknown field "{key}"', kind)
        for key, field in spec.fields.items():
            item = value.get(key)
            if item is None:
                if field.required:
                    raise _FieldError(f'Can\'t find field "{key}"', kind)
                continue
            if field.const is not None and item != field.const:
                raise _FieldError(f'Field "{key}" must be "{field.const}"', kind)
            checked[key] = self._field_value(item, field, key, kind)
        return checked

    def _field_value(self, item: object, field: FieldSpec, key: str, kind: str) -> Any:
        where = f'Field "{key}"'
        if len(field.types) == 1:
            return self._value(item, field.types[0], where, kind)
        for option in field.types:
            try:
                return self._value(item, option, where, kind)
            except _FieldError:
                continue
        raise _FieldError(f"{where} must be of type {' or '.join(field.types)}", kind)

    def _subtype(self, value: dict[str, Any], kind: str, spec: TypeSpec) -> str:
        for subtype in spec.subtypes:
            fields = self.types[subtype].fields if subtype in self.types else {}
            for key, field in fields.items():
                if field.const is not None and value.get(key) == field.const:
                    return subtype
        keys = {
            key
            for subtype in spec.subtypes
            for key, field in (self.types[subtype].fields if subtype in self.types else {}).items()
            if field.const is not None
        }
        key = next(iter(sorted(keys)), "type")
        raise _FieldError(f'Unsupported {key} "{value.get(key)}"', kind)


def _missing(name: str) -> str:
    if name == "text":
        return "message text is empty"
    if name == "chat_id":
        return "chat_id is empty"
    return f'parameter "{name}" is required'


_SCALARS = frozenset({"Integer", "Float", "Boolean", "String", "InputFile", "True"})
_NO_MATCH = object()


def _scalar(kind: str, value: object) -> Any:
    """The value as ``kind`` (form bodies carry every scalar as a string), or _NO_MATCH."""
    result: Any = _NO_MATCH
    if kind == "Integer":
        if isinstance(value, int) and not isinstance(value, bool):
            result = value
        elif isinstance(value, str) and _INTEGER.match(value.strip()):
            result = int(value)
    elif kind == "Float":
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if numeric or (isinstance(value, str) and _FLOAT.match(value.strip())):
            result = float(value)  # type: ignore[arg-type]
    elif kind in ("Boolean", "True"):
        if isinstance(value, bool):
            result = value
        elif isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
            result = value.strip().lower() in _TRUE_WORDS
    elif kind in ("String", "InputFile"):
        if isinstance(value, str):
            result = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            result = str(value)
    return result
