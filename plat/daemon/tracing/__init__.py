"""Tracing: W3C trace context through the gateway, the spans of each call kept in
the store and exported over OTLP/HTTP when the standard OTEL_* variables ask for it.

:mod:`.context` reads and writes ``traceparent``; :mod:`.tracer` decides per call
(the OpenTelemetry SDK's sampler) and times it on the hot path with a few clock
reads; :mod:`.spans` turns a stored call into its spans; :mod:`.export` hands spans
to the SDK's batch processor and OTLP exporter, off the hot path.
"""
