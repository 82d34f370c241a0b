"""Search over trick combinations on Ray Tune: spaces (YAML), trials (Ray Train drivers), pool."""
