"""hello-python: greets the `name` given in a JSON body.

    plat invoke hello-python -d '{"name": "Ada"}'
    -> {"message": "Hello, Ada!", "received": "15 Bytes"}

It uses one third-party package, humanize (pinned in requirements.txt), to show
that dependencies are installed at build time in their own image layer.
"""

import json

import humanize


def handle(event, context):
    try:
        data = json.loads(event.body) if event.body.strip() else {}
    except ValueError:
        data = {}
    name = data.get("name") if isinstance(data, dict) else None
    return {
        "message": f"Hello, {name or 'world'}!",
        "received": humanize.naturalsize(len(event.body)),
    }
