"""The kinds of bytes a traced training step counts, shared by the tracer and the fitted terms.

``saved`` tensors kept for backward, ``forward`` temporaries of the forward pass, ``backward``
temporaries of the backward pass, ``grad`` parameter gradients; see :mod:`core.memory.trace`.
"""

KINDS = ("saved", "forward", "backward", "grad")
