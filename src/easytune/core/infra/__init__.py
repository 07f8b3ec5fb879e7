"""Infrastructure under every layer: typed configs, runtime (seeds, devices, threads), OpenMP defaults, atomic writes, resumable state, checkpoint headers, process groups, worker pools."""
