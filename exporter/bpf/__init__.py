"""Kernel side of the ebpf source: the tracepoint programs (sched.bpf.c) and their loader."""
