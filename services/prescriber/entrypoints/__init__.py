"""What reaches the prescriber from outside and is translated into a call: HTTP and FastStream.

``clinic_api`` (reads of prescriptions; it mounts the channels' router),
``probes`` (health, readiness, metrics) and ``log_channel`` (the rx feeds'
log line) live here.
The partition feeds are read by ``services.prescriber.feeds``.
"""
