"""Kubernetes and Knative as plat's scale-out target.

The same ``plat.yaml`` that runs on one machine becomes Kubernetes objects
(``mapping``: pure, tested by tables and by the official schemas), printed as
YAML for GitOps (``render``), applied with server-side apply through the
official ``kubernetes`` client (``apply``) and waited for (``wait``). The image
is the one ``plat push`` put in a registry (``wire`` is what the push route and
the CLI share). See docs/kubernetes.md for the mapping, field by field.
"""
