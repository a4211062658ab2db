"""GPU kernels with pure-PyTorch references; each public op dispatches through ``backend.py``."""
