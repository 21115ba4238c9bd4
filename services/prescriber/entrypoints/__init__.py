"""What reaches the prescriber from outside and is translated into a call: HTTP and FastStream.

``probes`` (health, readiness, metrics) and ``log_channel`` (the rx feeds'
log line) live here; the clinic API is ``services.prescriber.clinic_api``.
The partition feeds are read by ``services.prescriber.feeds``.
"""
