"""One-line summaries of the errors torch.load and safetensors raise.

torch's ``weights_only`` refusal is a page of advice; a user needs the line
naming what was refused. Kept free of diffusers so light modules can use it.
"""

import re


def load_error_summary(exc: Exception) -> str:
    """One line from a torch.load / safetensors error.

    torch's weights_only refusal spans a page; keep the part that names the culprit.
    """
    text = str(exc)
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if match:
        return f"it holds a non-tensor object ({match.group(1)})"
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
    if match:
        return " ".join(match.group(1).split())
    return next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
