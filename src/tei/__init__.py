"""TEI-compatible embedding server."""
__version__ = "0.1.0"

import os as _os

# torch >= 2.5 imports installed device plugins (torch_npu) inside `import torch`; a torch_npu without
# CANN then breaks torch itself. Set before anything imports torch: the device layer imports torch_npu
# only when an NPU is asked for or (auto) looks usable.
_os.environ.setdefault("TORCH_DEVICE_BACKEND_AUTOLOAD", "0")
