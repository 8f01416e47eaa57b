"""A handler that never returns on one path, with a short ``timeout:``.

Callers of ``/hang`` get a JSON 504 once the function's timeout (:data:`TIMEOUT`)
has passed, never a hang (one whose instance is recycled under it before its own
timeout may get a JSON 502 instead; one past its timeout may not). :data:`WEDGING`
of them at once leave more hung handler calls inside the single instance than its
runtime has workers (the python shim runs plain handlers on 32 threads), so that
instance can no longer answer anything: the daemon must recycle it. Bound: from the
end of that burst, other paths of the same function answer 200 again within
:data:`RECOVERED` (every call started after that is a 200), while a few clients keep
calling ``/hang`` and keep getting 504s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from benchmarks.load import LoadResult
from tests.chaos.support import Chaos, assert_only_json_errors

pytestmark = pytest.mark.container

NAME = "chaos-stall"
TIMEOUT = 1.0
WEDGING = 48
# Admission lets the whole burst in at once; one instance at most, so none is spare.
MANIFEST = f"timeout: {TIMEOUT:g}s\nscale: {{min: 1, max: 1, concurrency: 64}}\n"
FUNCTIONS = {NAME: MANIFEST}  # deployed by the `chaos` fixture (conftest.py)
RECOVERED = 5.0
PHASE = 8.0


def _hung_calls_answer_504(result: LoadResult) -> None:
    """Every /hang call that outlived the timeout was answered a JSON 504 soon after it;
    one cut sooner (its instance recycled under it, for the others' hung calls) may be
    a JSON 502."""
    hung = [o for o in result.failed if o.path == "/hang"]
    cut = [o for o in hung if o.latency < TIMEOUT and o.status == 502 and o.json_error]
    timed_out = [o for o in hung if o not in cut]
    wrong = [o for o in timed_out if o.status != 504 or o.error != "function_timeout"]
    assert not wrong, "/hang outran its timeout but was not answered a JSON 504: " + "; ".join(
        o.describe() for o in wrong[:10]
    )
    late = [o for o in timed_out if not TIMEOUT <= o.latency <= TIMEOUT + 2.0]
    assert not late, f"/hang not answered about {TIMEOUT:g} s after it began: " + "; ".join(
        o.describe() for o in late[:10]
    )


@pytest.mark.timeout(120)
def test_hung_handlers_get_504_and_the_function_keeps_serving(
    chaos: Chaos, record_property: Callable[[str, object], None]
) -> None:
    chaos.wait_ready(NAME, 1)
    with chaos.load(NAME, clients=WEDGING, seconds=0.1, paths=("/hang",)) as burst:
        wedge = burst.wait()
    assert wedge.total == WEDGING, wedge.summary()
    _hung_calls_answer_504(wedge)
    wedged_at = time.monotonic()

    # 2 clients keep hanging calls coming; 8 call a path that answers at once.
    paths = ("/hang", "/hang", *["?s=0.01"] * 8)
    with chaos.load(NAME, clients=len(paths), seconds=PHASE, paths=paths) as load:
        result = load.wait()
    offset = time.monotonic() - wedged_at - result.seconds  # load start, after the burst

    # Calls that reached the wedged instance before it was recycled fail too (502 when
    # it is stopped under them, 504 past their timeout); after the bound none may.
    assert_only_json_errors(result, allowed=(502, 503, 504))
    _hung_calls_answer_504(result)
    fast = [o for o in result.failed if o.path != "/hang"]
    last = max((offset + o.started for o in fast), default=0.0)
    record_property("other_paths_failing_until_s", f"{last:.2f}")
    late = [o for o in fast if offset + o.started >= RECOVERED]
    assert not late, (
        f"other paths still failed {RECOVERED:g} s after the hung calls wedged the instance: "
        + "; ".join(o.describe() for o in late[:10])
        + " -- "
        + result.summary()
    )
    # /hang never answers 2xx: every success is a call of the other path.
    assert result.succeeded > 0, "no call of another path succeeded: " + result.summary()
    chaos.assert_admission_settled(NAME, timeout=TIMEOUT + 10)
    chaos.assert_no_orphans()
