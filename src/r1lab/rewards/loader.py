"""Turn a RewardSpec into a callable: a registered name, "package.module:function" or "path/file.py:function"."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1lab.config import RewardSpec
from r1lab.errors import UserError
from r1lab.rewards.learned import is_learned, load_learned
from r1lab.rewards.registry import REWARDS

# Arguments every reward receives from the runner, never read from the dataset.
PASSED = {"completion", "prompt", "prompts"}
# Columns the runner always supplies (tokens), beside the dataset's own.
ALWAYS_SUPPLIED = {"completion_length", "max_completion_length"}


@dataclass
class LoadedReward:
    """A reward function bound to its spec kwargs. Call it like the function: (completion, prompt=, **columns).

    A function marked `batched = True` takes lists instead: (completions, *, prompts, **columns as lists) and
    returns one value per completion.
    """

    spec: RewardSpec
    fn: Callable[..., Any]
    label: str  # short name for logs: the registered name or the function's name
    columns: set[str] = field(default_factory=set)  # dataset columns it needs
    correctness: bool = False
    batched: bool = False
    parses: Callable[..., Any] | None = None  # whether a completion gives an answer it can read (per sample)
    is_parse_check: bool = False  # this is another reward's `parses` check (see parse_check)
    in_process: bool = False  # scored in the runner's process, not the worker (rewards.learned: model:PATH)

    def __call__(self, completion: Any, **columns: Any) -> Any:
        columns.update(self.spec.kwargs)
        return self.fn(completion, **columns)

    def parse_check(self) -> LoadedReward | None:
        """The `parses` check as a reward of its own (same kwargs, timeout), so the worker can run it."""
        if self.parses is None:
            return None
        return LoadedReward(spec=self.spec, fn=self.parses, label=f"{self.label}/parses", is_parse_check=True)


def load_reward(spec: RewardSpec) -> LoadedReward:
    """Resolve `spec.name`, check `spec.kwargs` against the function, and bind them."""
    name = spec.name.strip()
    if is_learned(name):  # model:PATH, a reward model (rewards/learned.py)
        fn, label = load_learned(spec)
        return LoadedReward(spec=spec, fn=fn, label=label, batched=True, in_process=True)
    registered = ":" not in name
    if registered:
        try:
            fn = REWARDS.get(name)
        except UserError as e:
            raise UserError(
                e.what,
                where=f"rewards: name={name!r}",
                fix=f"{e.fix}; or a user function as 'package.module:function' or 'path/to/file.py:function'",
            ) from None
        label = name
    else:
        fn = _import_function(name)
        label = name.rsplit(":", 1)[1]
    if not callable(fn):
        raise UserError(f"reward {name!r} is not a function (it is a {type(fn).__name__})", where=name)
    _check_kwargs(fn, spec, strict=registered)
    check = getattr(fn, "check_kwargs", None)
    if check is not None:
        check(dict(spec.kwargs))
    return LoadedReward(
        spec=spec,
        fn=fn,
        label=label,
        columns=_required_columns(fn, spec.kwargs),
        correctness=bool(getattr(fn, "correctness", False)) or fn.__module__ == "r1lab.rewards.tasks",
        batched=bool(getattr(fn, "batched", False)),
        parses=_parses(fn, name),
    )


def _parses(fn: Callable[..., Any], name: str) -> Callable[..., Any] | None:
    check = getattr(fn, "parses", None)
    if check is not None and not callable(check):
        raise UserError(
            f"reward {name!r}: its `parses` attribute is a {type(check).__name__}, not a function",
            where=name,
            fix="set fn.parses = a function (completion, *, prompt, **columns) -> bool, or leave it out",
        )
    return check


def _import_function(name: str) -> Any:
    target, _, attr = name.rpartition(":")
    if not target or not attr.isidentifier():
        raise UserError(
            f"reward {name!r} does not name a function",
            where=f"rewards: name={name!r}",
            fix="write 'package.module:function' or 'path/to/file.py:function'",
        )
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _import_file(Path(target).expanduser(), name)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            raise UserError(
                f"reward module {target!r} cannot be imported: {e}",
                where=f"rewards: name={name!r}",
                fix="install the package or put it on PYTHONPATH; for a file, write 'path/to/file.py:function'",
            ) from None
        except Exception as e:
            found = importlib.util.find_spec(target)
            raise _import_failed(target, name, e, origin=found.origin if found else None) from None
    if not hasattr(module, attr):
        found = sorted(k for k, v in vars(module).items() if inspect.isfunction(v) and not k.startswith("_"))
        raise UserError(
            f"{target} has no function {attr!r}",
            where=f"rewards: name={name!r}",
            fix=f"functions there: {', '.join(found) or '(none)'}",
        )
    return getattr(module, attr)


def _import_file(path: Path, name: str) -> Any:
    path = path.resolve()
    if not path.is_file():
        raise UserError(
            f"reward file not found: {path}",
            where=f"rewards: name={name!r}",
            fix="relative paths are read from the directory r1lab runs in",
        )
    # A stable, unique module name, so the same file always maps to one module (and pickles by reference).
    module_name = f"r1lab_user_reward_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise _import_failed(str(path), name, e, origin=str(path)) from None
    return module


def _import_failed(target: str, name: str, error: Exception, origin: str | None = None) -> UserError:
    # Point at the user's own line, not at importlib's internals.
    frames = traceback.extract_tb(error.__traceback__)
    line = getattr(error, "lineno", None) if isinstance(error, SyntaxError) else None
    own = [f for f in frames if f.filename == origin] or [f for f in frames if "importlib" not in f.filename]
    where = (
        f"{error.filename}:{line}" if line else (f"{own[-1].filename}:{own[-1].lineno}" if own else target)
    )
    return UserError(
        f"reward {name!r}: importing {target} failed: {type(error).__name__}: {error}",
        where=where,
        fix="fix the error in that file (try `python -c 'import ...'` on it)",
    )


def _check_kwargs(fn: Callable[..., Any], spec: RewardSpec, *, strict: bool) -> None:
    """A kwarg must be a named parameter; a user function taking **kwargs may receive any."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    named = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)} - PASSED
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in spec.kwargs if k not in named and (strict or not takes_any)]
    if unknown:
        raise UserError(
            f"reward {spec.name!r} has no option {', '.join(map(repr, unknown))}",
            where=f"rewards: name={spec.name!r}, kwargs",
            fix=f"its options: {', '.join(sorted(named)) or '(none)'}",
        )


def _required_columns(fn: Callable[..., Any], kwargs: dict[str, Any]) -> set[str]:
    declared = getattr(fn, "required_columns", None)
    if declared is not None:
        return set(declared(dict(kwargs)) if callable(declared) else declared)
    # A user function needs the columns it names as parameters without defaults.
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return set()
    return (
        {
            p.name
            for p in params[1:]
            if p.default is p.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }
        - PASSED
        - set(kwargs)
    )


def missing_columns(
    rewards: Iterable[LoadedReward], available: set[str]
) -> list[tuple[int, LoadedReward, str]]:
    """(index, reward, column) for every column a reward needs that `available` lacks."""
    return [(i, r, c) for i, r in enumerate(rewards) for c in sorted(r.columns - available)]
