"""The unit analyses with the model on a CUDA GPU (torch's cuDNN GRU per layer) against the CPU."""

from charrnn.analysis.activations import read
from charrnn.analysis.units import find_units

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n") * 10


def test_pass_on_cuda_equals_cpu(cpu_model, cuda_model):
    on_cpu = read(cpu_model, TEXT, chunk_size=256)
    on_cuda = read(cuda_model, TEXT, chunk_size=256)
    assert on_cuda.hidden.device.type == "cpu"  # pieces come back to the host
    assert (on_cuda.stacked() - on_cpu.stacked()).abs().max() <= 1e-4


def test_finder_on_cuda_ranks_as_on_cpu(cpu_model, cuda_model):
    top_cpu = find_units(cpu_model, TEXT, "line position")["units"][:5]
    top_cuda = find_units(cuda_model, TEXT, "line position")["units"][:5]
    assert [(r["layer"], r["kind"], r["unit"]) for r in top_cuda] == [(r["layer"], r["kind"], r["unit"]) for r in top_cpu]
