"""CUDA knowledge: arch lists, binary compatibility, driver floors, device-code plans, fatbin reading
and wheel audits, ELF machines, Triton's ptxas variables."""
