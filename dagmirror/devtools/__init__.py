"""Development tools: local S3 servers, a counting/fault-injecting proxy, corpora and the demo.

Used by tests, benchmarks and `make demo`; the engine never imports this package (import-linter checks).
"""
