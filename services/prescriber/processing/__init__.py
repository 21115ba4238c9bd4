"""The prescriber's use case (``Processor``) and the collaborators it reads and writes through.

``processor`` folds what a feed batch announces and stores what it emits;
``cursors`` keeps each user's folded state and snapshots it; ``histories``
finds the history to fold (from the feed or the log) and the earlier history
a refold needs, with ``timelines`` keeping recent refold timelines;
``changes`` appends what was emitted. Only the store's protocol is used here:
no Redis, no HTTP.
"""
