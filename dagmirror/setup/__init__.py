"""Setting up a bucket and its access, and checking a set-up: `dagmirror bucket init`, `iam-policy` and
`doctor` (docs/setup.md). The decisions are pure (`iam.py`, `iameval.py`, `bucketplan.py`, `checks.py`);
`init.py` and `doctor.py` gather and apply them through the `ports.py` Protocols (SDK side:
dagmirror/source/admin.py; fakes: `memory.py`)."""
