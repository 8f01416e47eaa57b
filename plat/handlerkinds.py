"""The kinds of application a runtime's shim serves: plat.yaml's ``adapter:``.

A function written for plat is a handler of the kind ``plat``. Code written for
another interface runs unchanged through an adapter of its runtime's shim: a
WSGI or ASGI app or an AWS Lambda handler (python), an Express app (node).
Without ``adapter:`` the shim tells the kind from the object it loads
(docs/runtimes.md, "Existing apps"); the key makes that choice explicit.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, ValidationInfo

# runtime -> the kinds its shim has an adapter for.
ADAPTERS: dict[str, tuple[str, ...]] = {
    "python": ("plat", "wsgi", "asgi", "lambda"),
    "node": ("plat", "express"),
}


def _fits_runtime(value: str, info: ValidationInfo) -> str:
    runtime = info.data.get("runtime")
    if runtime is None:  # the runtime itself is invalid: that error is reported
        return value
    kinds = ADAPTERS.get(str(runtime), ())
    if value not in kinds:
        if not kinds:
            raise ValueError(
                f"the {runtime} runtime takes no adapter (its image serves HTTP itself); "
                "remove the key"
            )
        raise ValueError(
            f"the {runtime} runtime has no {value!r} adapter; use one of: {', '.join(kinds)}"
        )
    return value


Adapter = Annotated[
    Literal["plat", "wsgi", "asgi", "lambda", "express"], AfterValidator(_fits_runtime)
]
