# The kernels of _lstm_fast.pyx, compiled again with the avx512 instruction set
# enabled (flags in setup.py), so the fused gate loops vectorise with wider
# registers and FMA. Never imported directly: sklstm/_kernels/_dispatch.py
# loads this module only after checking that the CPU supports it.
include "_lstm_fast.pyx"
