"""Artifact storage, below the stages that use it: the version store (`store`), its mirror in object storage
(`remote`), content fingerprints (`fingerprint`) and atomic file writes (`atomic`). It knows where versions live
and how they are published; it knows nothing of data, models or environments."""
