"""Streaming tensor I/O: read one tensor at a time, write shards without buffering them."""
