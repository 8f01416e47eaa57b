"""Functions' SLOs in the daemon: their SLIs from the invocation records
(:mod:`.sli`) and the Prometheus rules that watch them (:mod:`.rules`)."""
