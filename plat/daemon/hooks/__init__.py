"""Git webhooks: a signed push or pull/merge request builds and deploys a function.

:mod:`.signatures` says who sent a delivery and checks its signature over the raw
body; :mod:`.payloads` turns a verified body into a :class:`~.payloads.Change`;
:mod:`.previews` names preview functions (``<name>--<branch-slug>``);
:mod:`.fetch` gets the pushed commit with real git into a fresh folder;
:mod:`.lanes` runs each hook's deliveries in order, one branch at a time;
:mod:`.service` keeps the hooks and takes deliveries; :mod:`.receiver` is the
gateway's ``POST /hooks/git/<id>``.
"""
