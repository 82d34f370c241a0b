"""Encoders (one per modality), fusion modules, and the fused model that ties them together."""
