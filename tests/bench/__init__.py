"""Benchmarks (``make bench``): they print figures and assert nothing about speed.

They run their stacks as the tests do, as ``BACKTRACK_ENVIRONMENT=test``
(short secrets, webhooks to loopback), inherited by every process they start.
"""

import os

os.environ["BACKTRACK_ENVIRONMENT"] = "test"
