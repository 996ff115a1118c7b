"""``@flow``: the Flow object users decorate, call and deploy.

Calling a flow runs it through ``stratoflow.engine.flow_engine`` (``run_flow``), which creates
the flow run and drives it to its final state; executors claim existing runs there too
(``execute_flow_run``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, cast, get_type_hints, overload

from pydantic import ConfigDict, ValidationError, create_model

from stratoflow.context import FlowRunContext, flow_run_ctx
from stratoflow.deployments.deploy import deploy
from stratoflow.engine.flow_engine import run_flow
from stratoflow.exceptions import ParameterValidationError, raise_on_name_with_banned_characters
from stratoflow.models import FlowRun
from stratoflow.states import State

P = ParamSpec("P")
R = TypeVar("R")


def _file_hash(fn: Callable[..., Any]) -> str | None:
    try:
        path = inspect.getsourcefile(fn)
        if path is None:
            return None
        with open(path, "rb") as fh:
            return hashlib.md5(fh.read(), usedforsecurity=False).hexdigest()
    except (OSError, TypeError):
        return None


class Flow(Generic[P, R]):
    """A Python function whose calls are recorded as flow runs (see ``@flow``)."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        version: str | None = None,
        flow_run_name: str | Callable[[], str] | None = None,
        retries: int = 0,
        retry_delay_seconds: float | Iterable[float] | None = None,
        timeout_seconds: float | None = None,
        validate_parameters: bool = True,
        persist_result: bool | None = None,
        log_prints: bool = False,
        tags: Iterable[str] | None = None,
        on_completion: Iterable[Callable[[Flow[..., Any], FlowRun, State], None]] | None = None,
        on_failure: Iterable[Callable[[Flow[..., Any], FlowRun, State], None]] | None = None,
        on_crashed: Iterable[Callable[[Flow[..., Any], FlowRun, State], None]] | None = None,
        on_cancellation: Iterable[Callable[[Flow[..., Any], FlowRun, State], None]] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError("@flow must decorate a function")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be > 0")
        self.fn = fn
        # As Prefect: a flow's name is a path segment of the API (/flows/<name>), so it must not
        # hold / % & > < (InvalidNameError); a lambda's "<lambda>" becomes "unknown-lambda".
        self.name = name or fn.__name__.replace("_", "-").replace("<lambda>", "unknown-lambda")
        raise_on_name_with_banned_characters(self.name)
        self.description = description or inspect.getdoc(fn)
        self.version = version or _file_hash(fn)
        self.flow_run_name = flow_run_name
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds
        self.timeout_seconds = timeout_seconds
        self.should_validate_parameters = validate_parameters
        self.persist_result = persist_result
        self.log_prints = log_prints
        self.tags = set(tags or ())
        self.on_completion_hooks = list(on_completion or ())
        self.on_failure_hooks = list(on_failure or ())
        self.on_crashed_hooks = list(on_crashed or ())
        self.on_cancellation_hooks = list(on_cancellation or ())
        self._signature = inspect.signature(fn)
        self._model: Any = None
        if retry_delay_seconds is None:
            self._retry_delays: list[float] = []
        elif isinstance(retry_delay_seconds, int | float):
            self._retry_delays = [float(retry_delay_seconds)]
        else:
            self._retry_delays = [float(x) for x in retry_delay_seconds]
        functools.update_wrapper(self, fn)

    def with_options(self, **overrides: Any) -> Flow[P, R]:
        options: dict[str, Any] = {
            "name": self.name, "description": self.description, "version": self.version,
            "flow_run_name": self.flow_run_name, "retries": self.retries,
            "retry_delay_seconds": self.retry_delay_seconds, "timeout_seconds": self.timeout_seconds,
            "validate_parameters": self.should_validate_parameters, "persist_result": self.persist_result,
            "log_prints": self.log_prints, "tags": self.tags, "on_completion": self.on_completion_hooks,
            "on_failure": self.on_failure_hooks, "on_crashed": self.on_crashed_hooks,
            "on_cancellation": self.on_cancellation_hooks,
        }
        options.update(overrides)
        return Flow(self.fn, **options)

    # -- parameters ----------------------------------------------------------------------------
    def _parameter_model(self) -> Any:
        if self._model is None:
            try:
                hints = get_type_hints(self.fn)
            except Exception:
                hints = {}
            fields: dict[str, Any] = {}
            for pname, param in self._signature.parameters.items():
                annotation = hints.get(pname, Any)
                if param.kind is inspect.Parameter.VAR_POSITIONAL:
                    annotation = tuple[annotation, ...]  # type: ignore[valid-type]
                elif param.kind is inspect.Parameter.VAR_KEYWORD:
                    annotation = dict[str, annotation]  # type: ignore[valid-type]
                default = ... if param.default is inspect.Parameter.empty else param.default
                fields[pname] = (annotation, default)
            self._model = create_model(
                f"{self.fn.__name__}_parameters", __config__=ConfigDict(arbitrary_types_allowed=True), **fields
            )
        return self._model

    def parameter_schema(self) -> dict[str, Any]:
        """JSON schema of the flow's parameters (what deployments validate against)."""
        return cast(dict[str, Any], self._parameter_model().model_json_schema())

    def validate_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """Coerce and check ``parameters`` against the signature's type hints.

        Raises ParameterValidationError naming each bad field; nothing is created before this.
        """
        unknown = set(parameters) - set(self._signature.parameters)
        if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in self._signature.parameters.values()):
            raise ParameterValidationError(self.name, [
                {"loc": (k,), "msg": "unexpected parameter (not in the flow's signature)"} for k in sorted(unknown)])
        if not self.should_validate_parameters:
            return dict(parameters)
        try:
            model = self._parameter_model().model_validate(parameters)
        except ValidationError as exc:
            raise ParameterValidationError(self.name, cast(list[dict[str, Any]], exc.errors())) from None
        return {name: getattr(model, name) for name in self._signature.parameters if name in parameters
                or self._signature.parameters[name].default is not inspect.Parameter.empty}

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        params = self._signature.parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(kwargs) - set(params))
            if unknown:
                raise ParameterValidationError(self.name, [
                    {"loc": (k,), "msg": "unexpected parameter (not in the flow's signature)"} for k in unknown])
        try:
            bound = self._signature.bind_partial(*args, **kwargs)
        except TypeError as exc:
            raise ParameterValidationError(self.name, [{"loc": (), "msg": str(exc)}]) from None
        missing = [n for n, p in self._signature.parameters.items()
                   if n not in bound.arguments and p.default is inspect.Parameter.empty
                   and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
        if missing:
            raise ParameterValidationError(self.name, [{"loc": (m,), "msg": "Field required"} for m in missing])
        return dict(bound.arguments)

    def _call_fn(self, parameters: dict[str, Any]) -> Any:
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for name, param in self._signature.parameters.items():
            if name not in parameters:
                continue
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                args.extend(parameters[name])
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                kwargs.update(parameters[name])
            elif param.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(parameters[name])
            else:
                kwargs[name] = parameters[name]
        if inspect.iscoroutinefunction(self.fn):
            return asyncio.run(self.fn(*args, **kwargs))
        return self.fn(*args, **kwargs)

    # -- calling -------------------------------------------------------------------------------
    def __call__(self, *args: Any, return_state: bool = False, **kwargs: Any) -> Any:
        parameters = self.validate_parameters(self._bind(args, kwargs))
        if inspect.iscoroutinefunction(self.fn):
            parent = flow_run_ctx.get()
            return asyncio.to_thread(self._run_and_unwrap, parameters, return_state, parent)
        return self._run_and_unwrap(parameters, return_state, flow_run_ctx.get())

    def _run_and_unwrap(self, parameters: dict[str, Any], return_state: bool, parent: FlowRunContext | None) -> Any:
        token = flow_run_ctx.set(parent)
        try:
            state = run_flow(self, parameters, parent)
        finally:
            flow_run_ctx.reset(token)
        return state if return_state else state.result()

    def deploy(self, name: str, **options: Any) -> Any:
        """Package this flow's source directory to S3 and create or update the deployment ``name``
        (see ``stratoflow.deployments.deploy`` for the options: work_pool, parameters, cron, ...)."""
        return deploy(self, name=name, **options)

    def __repr__(self) -> str:
        return f"Flow({self.name!r})"


@overload
def flow(__fn: Callable[P, R]) -> Flow[P, R]: ...
@overload
def flow(**kwargs: Any) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(__fn: Callable[P, R] | None = None, **kwargs: Any) -> Flow[P, R] | Callable[[Callable[P, R]], Flow[P, R]]:
    """Decorate a function as a flow: ``@flow`` or ``@flow(name=..., retries=..., ...)``."""
    if __fn is not None:
        return Flow(__fn, **kwargs)
    return cast(Callable[[Callable[P, R]], Flow[P, R]], lambda fn: Flow(fn, **kwargs))


# The engine's names are re-exported: ``from stratoflow.flows import execute_flow_run`` keeps working.
__all__ = ["Flow", "flow"]
