"""A deployment's parameter schema: checked safely when it is stored, and applied to the
parameters of every run made from it (422 naming the field, nothing written)."""

from __future__ import annotations

from typing import Any

from stratoflow.exceptions import Unprocessable
from stratoflow.safe_jsonschema import RegexBudgetExceeded, UnsafeSchema, check_safe, format_checker, validation_errors


def check_parameter_schema(schema: dict[str, Any]) -> None:
    """A deployment's schema must be valid JSON Schema, and its patterns ones RE2 runs (runs are
    checked on RE2, see ``validate_parameters``): refused now, naming the place, rather than at
    every run."""
    if not schema:
        return
    # cold start: jsonschema (with referencing and rpds) loads when a schema is first checked
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for


    try:
        check_safe(schema)
        validator_for(schema).check_schema(schema, format_checker=format_checker())
    except UnsafeSchema as exc:
        raise Unprocessable(f"body.parameter_openapi_schema.{exc.where}: {exc.message}") from None
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise Unprocessable(f"body.parameter_openapi_schema{'.' + where if where else ''}: not a valid JSON "
                            f"Schema: {exc.message}") from None


def validate_parameters(schema: dict[str, Any], parameters: dict[str, Any]) -> None:
    """Raise 422 naming the first parameter that breaks the deployment's schema.

    Patterns run on RE2 under a work budget (``stratoflow.safe_jsonschema``): no schema and no
    value can hold the request for more than a fraction of a second (``^(a+)+$`` on Python's
    ``re`` could for hours)."""
    if not schema:
        return

    try:
        found = validation_errors(schema, parameters)
    except UnsafeSchema as exc:
        where = f".{exc.where}" if exc.where else ""
        raise Unprocessable(f"the deployment's parameter_openapi_schema{where}: {exc.message}") from None
    except RegexBudgetExceeded as exc:
        raise Unprocessable(f"parameters: too costly to check against the deployment's patterns ({exc}); "
                            "send shorter values") from None
    errors = sorted(found, key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return
    details = []
    for err in errors:
        path = [str(p) for p in err.absolute_path]
        if not path and err.validator == "required":
            missing = [p for p in err.validator_value if isinstance(p, str) and p not in parameters]
            path = missing[:1]
        if not path and err.validator == "additionalProperties":
            extra = sorted(set(parameters) - set(schema.get("properties", {})))
            path = extra[:1]
        loc = ".".join(["parameters", *path])
        # A message quotes the value: cut, or 20 of them from a 1 MiB body would swell the answer.
        msg = err.message if len(err.message) <= 500 else err.message[:500] + "..."
        details.append({"loc": loc, "msg": msg, "type": str(err.validator)})
    first = details[0]
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    raise Unprocessable(f"{first['loc']}: {first['msg']}{more}", errors=details[:20])
