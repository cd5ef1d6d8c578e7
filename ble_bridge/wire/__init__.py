"""Bytes <-> objects: identity, mesh packets, fragments, compressed envelopes. Pure code."""
