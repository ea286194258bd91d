"""The wheelhouse and what reads, writes, verifies or serves its wheels."""
